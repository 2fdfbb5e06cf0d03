"""The per-run anchor: Safran & Shamir's (2018) protocol for one network at a time, in plain numpy.

Line for line as the authors' MATLAB ``findMinimum``: the gradient is computed times 2 pi, the step
is 0.1 / (2 pi) (the same iterate as W - 0.1 grad F), a run restarts from its initialization with
half the step when |grad F| > 1e4 (or is not finite), and stops at max_i |2 pi grad_{w_i} F| <= 1e-9.

    2 pi grad_{w_i} F = sum_j (|w_j| sin t_ij u_i + (pi - t_ij) w_j)
                      - sum_j (|v_j| sin s_ij u_i + (pi - s_ij) v_j)

with t_ij = angle(w_i, w_j) (t_ii = 0 gives the self term pi w_i), s_ij = angle(w_i, v_j), u_i = w_i/|w_i|.
This is the baseline ``study bench trainer`` measures the batched trainer against: the published code
runs one network per process this way, vectorized within the network only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class AnchorResult:
    """One run's end point and bookkeeping."""

    W: np.ndarray  # (n, d) end point
    steps: int  # gradient steps in the final attempt
    total_steps: int  # over all attempts
    step_size: float  # 0.1 / (2 pi) halved once per restart
    restarts: int
    converged: bool


def scaled_gradient(W: np.ndarray, V: np.ndarray) -> np.ndarray:
    """2 pi grad F at ``W: (n, d)`` for teacher ``V: (k, d)``, ``-> (n, d)`` (arccos of clipped cosines)."""
    norm_w = np.sqrt((W * W).sum(axis=1))  # (n,)
    norm_v = np.sqrt((V * V).sum(axis=1))  # (k,)
    U = W / norm_w[:, None]  # (n, d)
    cos_ww = np.clip(U @ U.T, -1.0, 1.0)  # (n, n)
    np.fill_diagonal(cos_ww, 1.0)
    t_ww = np.arccos(cos_ww)
    np.fill_diagonal(t_ww, 0.0)
    cos_wv = np.clip(U @ (V / norm_v[:, None]).T, -1.0, 1.0)  # (n, k)
    t_wv = np.arccos(cos_wv)
    radial = np.sin(t_ww) @ norm_w - np.sin(t_wv) @ norm_v  # (n,)
    return radial[:, None] * U + (np.pi - t_ww) @ W - (np.pi - t_wv) @ V


def find_minimum(
    W0: np.ndarray,
    V: np.ndarray,
    *,
    lr: float = 0.1,
    tol: float = 1e-9,
    restart_grad_norm: float = 1e4,
    max_steps: int = 200_000,
    max_restarts: int = 20,
) -> AnchorResult:
    """Gradient descent on F from ``W0: (n, d)`` by the published protocol (see the module docstring)."""
    step_size = lr / TWO_PI
    restarts = 0
    total = 0
    while True:
        W = W0.copy()
        for step in range(max_steps + 1):
            G = scaled_gradient(W, V)  # 2 pi grad F
            grad_norm = math.sqrt(float((G * G).sum())) / TWO_PI
            if not math.isfinite(grad_norm) or grad_norm > restart_grad_norm:
                break
            if float(np.sqrt((G * G).sum(axis=1)).max()) <= tol:
                return AnchorResult(W, step, total + step, step_size, restarts, True)
            if step == max_steps:
                return AnchorResult(W, step, total + step, step_size, restarts, False)
            W = W - step_size * G
        total += step
        restarts += 1
        step_size /= 2
        if restarts > max_restarts:
            return AnchorResult(W, step, total, step_size, restarts, False)
