"""Compiled (numba) escape descents on the teacher-student landscape: the twin of the descent loop in
:func:`study.diagnostics.critical.escape_test` (torch), one perturbed start per call.

For a start ``x_0`` the loop runs plain gradient descent ``x_{s+1} = x_s - lr grad F(x_s)`` for at most
``steps`` steps and returns the lowest loss seen, ``min_s F(x_s)`` over s = 0..S, stopping early once
F(x_s) < threshold (escaped) or an iterate or its loss is no longer finite, exactly as the torch loop.
The gradient is :func:`study.landscapes.teacher_student.kernel.grad_into` (same padded layout and scratch);
the loss comes from the same pass's cosines and norms:

    F(W) = ( 1/2 sum_ij |w_i||w_j| f(c_ij) - sum_ij |w_i||v_j| f(s_ij) ) / (2 pi) + 1/2 sum h(v, v),
    f(c) = sqrt(1 - c^2) + (pi - arccos c) c,

with c_ij the students' cosines and s_ij their cosines with the teachers. f is flat to first order at
c = +-1 (t = 0, pi), so the arccos of a rounded cosine costs no precision there (unlike the gradient).
Reached through ``TeacherStudentKernel.escape``. Cached on disk like the descent loop (compiling
takes ~8 s, once per process otherwise). Numba keys the cache on this file only: after editing
``grad_into`` or ``acos`` in the kernel module, touch this file too
(``tests/diagnostics/test_escape_engines.py`` holds the two engines together on fresh caches).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from study.landscapes.teacher_student.kernel import FASTMATH, TWO_PI, acos, grad_into, workspace


@njit(inline="always", cache=True, error_model="numpy")
def _pair(c: float) -> float:
    """f(c) = sin t + (pi - t) cos t for cos t = c (clipped to [-1, 1])."""
    c = min(1.0, max(-1.0, c))
    return math.sqrt(max(1.0 - c * c, 0.0)) + (math.pi - acos(c)) * c


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def _loss_here(
    n: int, k: int, identity: bool, U: np.ndarray, norm: np.ndarray, cos: np.ndarray, teacher_term: float
) -> float:
    """F at the point whose units ``U``, norms and cosines ``grad_into`` just computed."""
    students = 0.0
    for i in range(n):
        for j in range(n):
            students += norm[i] * norm[j] * _pair(cos[i, j])
    cross = 0.0
    for i in range(n):
        for j in range(k):  # identity: s_ij = u_i[j], |v_j| = 1; else the partner column n + j
            cross += norm[i] * (_pair(U[i, j]) if identity else norm[n + j] * _pair(cos[i, n + j]))
    return (0.5 * students - cross) / TWO_PI + teacher_term


@njit(cache=True, nogil=True, error_model="numpy", fastmath=FASTMATH)
def escape_one(
    e: int,
    starts: np.ndarray,
    Vp: np.ndarray,
    identity: bool,
    teacher_term: float,
    lr: float,
    steps: int,
    threshold: np.ndarray,
    lowest: np.ndarray,
) -> None:
    """Descend from ``starts[e]: (n, d)``; ``lowest[e]`` <- the lowest loss seen (inf if none finite)."""
    n, d = starts.shape[1], starts.shape[2]
    k = Vp.shape[0]
    # partners P: the point, then -V (general teacher), then zeros
    P, G, U, UT, norm, cos, weight, sin, radial = workspace(n, Vp, identity)
    x = P[:n]
    x[:, :d] = starts[e]
    finite = True
    for i in range(n):
        for c in range(d):
            finite = finite and math.isfinite(x[i, c])
    grad_into(P, n, k, identity, G, U, UT, norm, cos, weight, sin, radial)
    value = _loss_here(n, k, identity, U, norm, cos, teacher_term)
    best = value if value == value else math.inf  # fmin: NaN is skipped
    s = 0
    while finite and not best < threshold[e] and s < steps:
        for i in range(n):
            for c in range(d):
                x[i, c] = x[i, c] - lr * G[i, c]
                finite = finite and math.isfinite(x[i, c])
        grad_into(P, n, k, identity, G, U, UT, norm, cos, weight, sin, radial)
        value = _loss_here(n, k, identity, U, norm, cos, teacher_term)
        if value < best:
            best = value
        finite = finite and math.isfinite(value)
        s += 1
    lowest[e] = best


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def escape_rows(
    starts: np.ndarray,
    Vp: np.ndarray,
    identity: bool,
    teacher_term: float,
    lr: float,
    steps: int,
    threshold: np.ndarray,
    lowest: np.ndarray,
) -> None:
    """:func:`escape_one` for every start of ``starts: (E, n, d)``, spread over numba's threads."""
    for e in prange(starts.shape[0]):
        escape_one(e, starts, Vp, identity, teacher_term, lr, steps, threshold, lowest)
