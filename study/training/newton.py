"""The guarded Newton finish: from points near a minimum to stationarity <= tol in a few steps,
refusing saddles (batched torch, every device)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from study.landscapes.base import Landscape


@dataclass(frozen=True)
class NewtonFinish:
    """Outcome of :func:`newton_finish` for R replicas."""

    theta: Tensor  # (R, P) last iterate
    steps: Tensor  # (R,) Newton steps taken
    accepted: Tensor  # (R,) bool: converged to tol, never saw negative curvature, loss not above start


def newton_finish(landscape: Landscape, theta: Tensor, *, tol: float, max_steps: int) -> NewtonFinish:
    """Guarded Newton iteration x <- x - s H^+ grad from ``theta: (R, P)`` to stationarity <= ``tol``.

    H^+ is H^{-1} by Cholesky where H is positive definite, else the pseudo-inverse from an
    eigendecomposition that drops |lambda| < 1e-10 |H| (symmetry-induced zero eigenvalues and flat
    directions of degenerate minima; there convergence is linear, about 4x per step). The step
    s in (1, 1/2, 1/4, 1/8) is the first that lowers the stationarity measure. A replica is refused
    (``accepted`` false) as soon as its Hessian has an eigenvalue below -1e-6 |H| (Newton converges
    to saddles too: those are left to gradient descent, which escapes), when no step lowers the
    measure, or when it ends above the loss it started from (descent never climbs).
    """
    R = theta.shape[0]
    x = theta.clone()
    steps = torch.zeros(R, dtype=torch.long, device=theta.device)
    refused = torch.zeros(R, dtype=torch.bool, device=theta.device)
    stat = landscape.stationarity(x)  # (R,)
    for _ in range(max_steps):
        todo = torch.nonzero((stat > tol) & ~refused).squeeze(-1)
        if todo.numel() == 0:
            break
        xt = x[todo]
        g = landscape.grad(xt)  # (A, P)
        H = landscape.hessian(xt)  # (A, P, P)
        H = 0.5 * (H + H.transpose(-1, -2))
        delta, saddle = _newton_direction(H, g)  # (A, P), (A,)
        cand = xt - delta
        cand_stat = landscape.stationarity(cand)
        for shrink in (0.5, 0.25, 0.125):  # backtracking on the stationarity measure
            worse = ~(cand_stat < stat[todo]) & ~saddle
            if not bool(worse.any()):
                break
            cand[worse] = xt[worse] - shrink * delta[worse]
            cand_stat[worse] = landscape.stationarity(cand[worse])
        better = (cand_stat < stat[todo]) & ~saddle
        refused[todo[~better]] = True
        moved = todo[better]
        x[moved] = cand[better]
        stat[moved] = cand_stat[better]
        steps[moved] += 1
    accepted = ~refused & (stat <= tol)
    if bool(accepted.any()):
        rows = torch.nonzero(accepted).squeeze(-1)
        start_loss = landscape.loss(theta[rows])
        end_loss = landscape.loss(x[rows])
        climbed = end_loss > start_loss + 1e-12 * start_loss.abs().clamp_min(1.0)
        accepted[rows[climbed]] = False
    return NewtonFinish(theta=x, steps=steps, accepted=accepted)


def _newton_direction(H: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """H^+ g for symmetric ``H: (A, P, P)``, ``g: (A, P)``; and which rows have negative curvature."""
    A = H.shape[0]
    delta = torch.zeros_like(g)
    saddle = torch.zeros(A, dtype=torch.bool, device=g.device)
    chol, info = torch.linalg.cholesky_ex(H)
    pd = info == 0
    if bool(pd.any()):
        delta[pd] = torch.cholesky_solve(g[pd].unsqueeze(-1), chol[pd]).squeeze(-1)
    rest = torch.nonzero(~pd).squeeze(-1)
    if rest.numel() > 0:
        ev, U = torch.linalg.eigh(H[rest])  # (B, P), (B, P, P)
        scale = ev.abs().amax(dim=-1, keepdim=True)
        saddle[rest] = ev[:, 0] < -1e-6 * scale[:, 0]
        keep = ev.abs() > 1e-10 * scale
        inv = torch.where(keep, 1.0 / torch.where(keep, ev, torch.ones_like(ev)), torch.zeros_like(ev))
        delta[rest] = ((U * inv.unsqueeze(-2)) @ (U.transpose(-1, -2) @ g[rest].unsqueeze(-1))).squeeze(-1)
    return delta, saddle
