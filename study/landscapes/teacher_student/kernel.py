"""Compiled (numba) teacher-student gradient and loss for one replica: the twin of
:func:`population_grad_identity`, :func:`population_grad` and :func:`population_loss`.

For student ``W: (n, d)`` and teacher ``V: (k, d)`` (float64, C order):

    grad_{w_i} F = ( sum_j (pi - t_ij) w_j - sum_j (pi - s_ij) v_j
                     + (sum_j |w_j| sin t_ij - sum_j |v_j| sin s_ij) u_i ) / (2 pi)

with u_i = w_i / |w_i|, t_ij = angle(w_i, w_j) (t_ii = 0), s_ij = angle(w_i, v_j). Angles are the
arccos of clipped cosines, as in the torch twin; for a general teacher, pairs with |cos| > 0.9 are
recomputed as t = 2 atan2(|u - s|, |u + s|), sin t = |u - s||u + s| / 2 (as :func:`population_grad`).

Memory layout: rows and coordinates are zero-padded to a multiple of the vector width (``LANES``),
so the element-wise passes have no scalar remainder. The partner matrix ``P: (mp, dp)`` holds the
students, then minus the teachers (general teacher), then zero rows; the cosines are one product
``U @ UT`` (``UT: (dp, mp)``, the partners' units transposed) and the linear part one product
``(pi - t) @ P`` (both BLAS dgemm through numba's ``np.dot``, faster than compiled loops at these
sizes); arccos is :func:`acos` (branch-free, 1 ulp), which the compiler vectorizes across a row.
Scratch is allocated once per replica, never inside the step loop.

The descent loop (:func:`descend_one`, one replica per call, replicas over threads in
:func:`descend_rows`; its state is one :class:`study.landscapes.kernels.DescentState` record) follows
:func:`study.training.gd.train` step for step: gradient g at x;
stationarity max_i |2 pi g_i| and |g|; the loss-curve sample when total + step is on the grid; then, in
order, the stall check (every ``window`` steps), the restart (|g| > restart_grad_norm or not finite:
back to x0 with half the step, step -1 recorded if it stops there), and leaving on convergence
(stationarity <= tol), budget, stall or the Newton switch point; otherwise x <- x - lr g. A replica
reads only its own rows, so its end point never depends on its chunk, its thread or the thread count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from study.landscapes.kernels import DescentState

TWO_PI = 2.0 * math.pi
_TINY = 1e-300

FASTMATH = {"reassoc", "contract"}  # no nnan/ninf: NaN and inf still mean a restart
LANES = 8  # doubles per vector register (AVX-512); padding unit of the layout
_PIO2_HI = 1.57079632679489655800e00
_PIO2_LO = 6.12323399573676603587e-17
# fdlibm's rational approximation asin(x) = x + x R(x^2) on |x| <= 0.5
_PS0, _PS1, _PS2 = 1.66666666666666657415e-01, -3.25565818622400915405e-01, 2.01212532134862925881e-01
_PS3, _PS4, _PS5 = -4.00555345006794114027e-02, 7.91534994289814532176e-04, 3.47933107596021167570e-05
_QS1, _QS2 = -2.40339491173441421878e00, 2.02094576023350569471e00
_QS3, _QS4 = -6.88283971605453293030e-01, 7.70381505559019352791e-02


def acos_body(x: float) -> float:
    """arccos on [-1, 1] without branches (fdlibm's reduction and rational approximation).

    |x| <= 1/2: pi/2 - (x + x R(x^2)); x > 1/2: 2 asin(sqrt((1 - x) / 2)); x < -1/2: pi minus that.
    Both halves share R(z) on z in [0, 1/4], so the selects below vectorize across a row.
    """
    a = abs(x)
    big = a > 0.5
    z = (1.0 - a) * 0.5 if big else x * x
    p = z * (_PS0 + z * (_PS1 + z * (_PS2 + z * (_PS3 + z * (_PS4 + z * _PS5)))))
    q = 1.0 + z * (_QS1 + z * (_QS2 + z * (_QS3 + z * _QS4)))
    r = p / q
    s = math.sqrt(z)
    small = _PIO2_HI - (x - (_PIO2_LO - x * r))
    positive = 2.0 * (s + s * r)
    negative = math.pi - 2.0 * (s + (s * r - _PIO2_LO))
    return (positive if x > 0.0 else negative) if big else small


acos = njit(inline="always", cache=True, error_model="numpy")(acos_body)  # the CUDA loop compiles the same


def padded(size: int) -> int:
    """``size`` rounded up to a multiple of the vector width (8 doubles), so inner loops have no
    scalar remainder; padded coordinates and partners are zero and stay zero."""
    return -(-size // LANES) * LANES


@njit(cache=True, error_model="numpy")
def gradient(W: np.ndarray, V: np.ndarray, identity: bool) -> np.ndarray:
    """grad F at ``W: (n, d)`` for the teacher ``V: (k, d)``, ``(n, d)``: :func:`grad_into` with its
    padded layout and scratch built here (allocates: for tests and one-off use, not the step loop)."""
    n, d = W.shape
    k = V.shape[0]
    Vp = np.zeros((k, -(-d // LANES) * LANES))  # (k, dp)
    Vp[:, :d] = V
    P, G, U, UT, norm, cos, weight, sin, radial = workspace(n, Vp, identity)
    P[:n, :d] = W
    grad_into(P, n, k, identity, G, U, UT, norm, cos, weight, sin, radial)
    return G[:, :d].copy()


@njit(cache=True, error_model="numpy")
def workspace(n: int, Vp: np.ndarray, identity: bool) -> tuple[np.ndarray, ...]:
    """The padded layout and scratch :func:`grad_into` takes for ``n`` students and the padded teacher
    ``Vp: (k, dp)``: ``P: (mp, dp)`` (zero students, then -V for a general teacher, then zeros), then
    ``G, U: (n, dp)``, ``UT: (dp, mp)`` and ``norm: (mp,)`` (the teacher's slots filled), ``cos,
    weight, sin: (n, mp)`` and ``radial: (n,)``. Allocates: once per replica, outside the step loop."""
    k, dp = Vp.shape
    mp = -(-(n if identity else n + k) // LANES) * LANES
    P = np.zeros((mp, dp))
    G, U = np.zeros((n, dp)), np.zeros((n, dp))
    UT, norm = np.zeros((dp, mp)), np.zeros(mp)
    cos, weight, sin, radial = np.zeros((n, mp)), np.zeros((n, mp)), np.zeros((n, mp)), np.zeros(n)
    if not identity:
        P[n : n + k] = -Vp
        prepare_teacher(Vp, UT, norm, n)
    return P, G, U, UT, norm, cos, weight, sin, radial


@njit(cache=True, error_model="numpy")
def prepare_teacher(V: np.ndarray, UT: np.ndarray, norm: np.ndarray, n: int) -> None:
    """Write the teacher's unit columns and norms into the partner slots j >= n (general teacher)."""
    k, d = V.shape
    for j in range(k):
        s = 0.0
        for c in range(d):
            s += V[j, c] * V[j, c]
        nrm = math.sqrt(s)
        norm[n + j] = nrm
        den = max(nrm, _TINY)
        for c in range(d):
            UT[c, n + j] = V[j, c] / den


@njit(cache=True, error_model="numpy")
def _exact_angle(U: np.ndarray, UT: np.ndarray, i: int, j: int, d: int) -> tuple[float, float]:
    """(pi - t, sin t) with t = 2 atan2(|u - s|, |u + s|) for student unit i and partner unit j."""
    minus = 0.0
    plus = 0.0
    for c in range(d):
        a = U[i, c] - UT[c, j]
        b = U[i, c] + UT[c, j]
        minus += a * a
        plus += b * b
    minus = math.sqrt(minus)
    plus = math.sqrt(plus)
    return math.pi - 2.0 * math.atan2(minus, plus), 0.5 * minus * plus


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def grad_into(
    P: np.ndarray,
    n: int,
    k: int,
    identity: bool,
    G: np.ndarray,
    U: np.ndarray,
    UT: np.ndarray,
    norm: np.ndarray,
    cos: np.ndarray,
    weight: np.ndarray,
    sin: np.ndarray,
    radial: np.ndarray,
) -> None:
    """G <- grad F at the students ``P[:n]`` of the padded partner matrix ``P: (mp, dp)`` (students,
    then minus the teacher rows for a general teacher, then zero rows); the teacher's columns of UT
    and norm come from :func:`prepare_teacher`. ``weight`` holds pi - t_ij, so that the linear part
    of every student's gradient is one product ``weight @ P``."""
    mp, dp = P.shape
    m = n if identity else n + k  # identity: teachers are coordinates, not partner rows
    for i in range(n):  # norms and unit rows of the students
        s = 0.0
        for c in range(dp):
            s += P[i, c] * P[i, c]
        nrm = math.sqrt(s)
        norm[i] = nrm
        den = max(nrm, _TINY)
        for c in range(dp):
            u = P[i, c] / den
            U[i, c] = u
            UT[c, i] = u
    np.dot(U, UT, cos)  # (n, mp) cosines with every partner
    for i in range(n):  # one vectorized pass of arccos and sine over the padded rows
        for j in range(mp):
            cj = min(1.0, max(-1.0, cos[i, j]))
            weight[i, j] = math.pi - acos(cj)
            sin[i, j] = math.sqrt(max(1.0 - cj * cj, 0.0))
    for i in range(n):
        weight[i, i] = math.pi  # the self pair: t = 0
        sin[i, i] = 0.0
    if not identity:  # nearly (anti-)parallel pairs: the exact angle, as the torch twin
        for i in range(n):
            for j in range(m):
                if j != i and abs(cos[i, j]) > 0.9:
                    weight[i, j], sin[i, j] = _exact_angle(U, UT, i, j, dp)
    for i in range(n):
        r = 0.0
        for j in range(n):
            r += sin[i, j] * norm[j]
        for j in range(n, m):
            r -= sin[i, j] * norm[j]
        radial[i] = r
    np.dot(weight, P, G)  # (n, dp): sum_j (pi - t_ij) w_j - sum_j (pi - s_ij) v_j
    if identity:  # teacher e_j: cos s_ij = u_ij = UT[j, i], no matmul; vector over students
        for j in range(k):
            for i in range(mp):
                cj = min(1.0, max(-1.0, UT[j, i]))
                weight[0, i] = math.pi - acos(cj)  # row 0 of weight/sin is free again: scratch
                sin[0, i] = math.sqrt(max(1.0 - cj * cj, 0.0))
            for i in range(n):
                radial[i] -= sin[0, i]
                G[i, j] -= weight[0, i]
    for i in range(n):
        for c in range(dp):
            G[i, c] = (G[i, c] + radial[i] * U[i, c]) / TWO_PI


@njit(cache=True, error_model="numpy")
def _h_sum(A: np.ndarray, B: np.ndarray) -> float:
    """sum_ij h(a_i, b_j) with h = |a||b| (sin t + (pi - t) cos t) / (2 pi), t = 2 atan2(|u - s|, |u + s|)."""
    total = 0.0
    for i in range(A.shape[0]):
        na = math.sqrt(np.sum(A[i] * A[i]))
        ua = A[i] / max(na, _TINY)
        for j in range(B.shape[0]):
            nb = math.sqrt(np.sum(B[j] * B[j]))
            ub = B[j] / max(nb, _TINY)
            diff = math.sqrt(np.sum((ua - ub) ** 2))
            summ = math.sqrt(np.sum((ua + ub) ** 2))
            t = 2.0 * math.atan2(diff, summ)
            scale = diff * diff + summ * summ
            if not scale > 0:
                scale = 1.0
            sn = 2.0 * diff * summ / scale
            cs = (summ * summ - diff * diff) / scale
            total += na * nb * (sn + (math.pi - t) * cs)
    return total / TWO_PI


@njit(cache=True, error_model="numpy")
def loss(W: np.ndarray, V: np.ndarray, teacher_term: float) -> float:
    """F(W) = 1/2 sum h(w, w) - sum h(w, v) + ``teacher_term`` (1/2 sum h(v, v), computed once by
    :func:`teacher_term`). Allocates: for the occasional curve sample, not the step loop."""
    return 0.5 * _h_sum(W, W) - _h_sum(W, V) + teacher_term


@njit(cache=True, error_model="numpy")
def teacher_term(V: np.ndarray) -> float:
    """1/2 sum_ij h(v_i, v_j)."""
    return 0.5 * _h_sum(V, V)


# ---- the descent loop (one replica per call; the twin of study.training.gd.train) -------------------
class Teacher(NamedTuple):
    """The teacher as the loop reads it: ``V: (k, d)``, zero-padded ``Vp: (k, dp)``, whether it is
    the identity (then the teacher terms need no matmul) and 1/2 sum h(v_i, v_j)."""

    V: np.ndarray
    Vp: np.ndarray
    identity: bool
    term: float


@njit(cache=True, nogil=True, error_model="numpy", fastmath=FASTMATH)
def descend_one(r: int, teacher: Teacher, state: DescentState) -> None:
    """Descend replica ``r`` from its state until it leaves (see "The descent loop" above); the
    state's columns are those of :class:`study.landscapes.kernels.DescentState`."""
    V, Vp, identity, term = teacher
    theta0, theta, ints, floats, flags, limit, settings, curve_steps, curve = state
    tol, restart_at, max_restarts = settings[0], settings[1], settings[2]
    window, stall_rtol, stall_factor, stall_reductions = (
        int(settings[3]),
        settings[4],
        settings[5],
        settings[6],
    )
    k, dp = Vp.shape
    d = V.shape[1]
    n = theta.shape[1] // d
    # partners P: the replica's point, then -V (general teacher), then zeros
    P, G, U, UT, norm, cos, weight, sin, radial = workspace(n, Vp, identity)
    x = P[:n]  # (n, dp): the replica's point; padded coordinates stay zero
    start = theta0[r].reshape(n, d)
    x[:, :d] = theta[r].reshape(n, d)
    step, total, restarts, reductions = ints[r, 0], ints[r, 1], ints[r, 2], ints[r, 3]
    lr, checkpoint, switch_at = floats[r, 0], floats[r, 1], floats[r, 2]
    diverged = flags[r, 1]
    stalled = flags[r, 2]
    C = curve_steps.shape[0]
    col = 0
    done = False
    switch = False
    while True:
        grad_into(P, n, k, identity, G, U, UT, norm, cos, weight, sin, radial)
        squares = 0.0
        widest = 0.0
        for i in range(n):
            s = 0.0
            for c in range(dp):
                s += G[i, c] * G[i, c]
            squares += s
            widest = max(widest, s)
        stat = TWO_PI * math.sqrt(widest) if squares == squares else math.nan  # NaN anywhere: NaN
        gnorm = math.sqrt(squares)
        here = total + step
        while col < C and curve_steps[col] < here:
            col += 1
        if col < C and curve_steps[col] == here:
            curve[r, col] = loss(x[:, :d], V, term)
        blew = not (gnorm <= restart_at)  # also NaN
        done = stat <= tol
        over = step >= limit[r]
        switch = stat <= switch_at and not done
        if window > 0 and step > 0 and step % window == 0 and not done and not blew and not switch:
            now = loss(x[:, :d], V, term)
            stuck = not (now < checkpoint - stall_rtol * abs(now))
            checkpoint = now
            slower = stuck and reductions < stall_reductions
            if slower:
                reductions += 1
                checkpoint = math.inf
                lr = lr * stall_factor
            stalled = stuck and not slower
            over = over or stalled
        if blew:
            restarts += 1
            total += step
            lr = lr / 2
            x[:, :d] = start
            checkpoint = math.inf
            if restarts > max_restarts:
                diverged = True
                done = True
            switch = False
            step = -1  # the gradient of the blown-up point is never applied
        if done or over or switch:
            break
        if not blew:
            for i in range(n):
                for c in range(dp):
                    x[i, c] = x[i, c] - lr * G[i, c]
        step += 1
    theta[r].reshape(n, d)[:, :] = x[:, :d]
    ints[r, 0], ints[r, 1], ints[r, 2], ints[r, 3] = step, total, restarts, reductions
    floats[r, 0], floats[r, 1] = lr, checkpoint
    flags[r, 0] = done and not diverged
    flags[r, 1] = diverged
    flags[r, 2] = stalled
    flags[r, 3] = switch
    flags[r, 4] = True


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def descend_rows(rows: np.ndarray, teacher: Teacher, state: DescentState) -> None:
    """:func:`descend_one` for each replica in ``rows``, spread over numba's threads."""
    for t in prange(rows.shape[0]):
        descend_one(rows[t], teacher, state)


@dataclass(frozen=True)
class TeacherStudentKernel:
    """The teacher-student landscape's compiled loop (:class:`study.landscapes.kernels.DescentKernel`):
    ``V: (k, d)`` float64 in C order, and whether it is the identity."""

    V: np.ndarray
    identity: bool

    def teacher(self) -> Teacher:
        """The record the loop reads (its padded copy and 1/2 sum h(v, v) computed here)."""
        Vp = np.zeros((self.V.shape[0], padded(self.V.shape[1])))  # (k, dp)
        Vp[:, : self.V.shape[1]] = self.V
        return Teacher(self.V, Vp, self.identity, teacher_term(self.V))

    def descend(self, rows: np.ndarray, state: DescentState) -> None:
        descend_rows(rows, self.teacher(), state)
