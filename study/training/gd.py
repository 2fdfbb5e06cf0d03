"""Batched full-batch gradient descent with per-replica restarts and stopping (Safran & Shamir 2018).

All R replicas advance as one tensor computation; replicas that have stopped leave the active set and
cost no further updates. Each replica's trajectory depends only on its own initialization, so results
do not depend on which chunk a run is computed in.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from study.landscapes.base import Landscape


@dataclass(frozen=True)
class TrainConfig:
    """Gradient descent with the published protocol's defaults.

    A replica stops when ``landscape.stationarity <= tol`` ("converged"), at ``max_steps`` ("max_steps"),
    or, with ``stall_window`` > 0, when its loss stops decreasing ("stalled"); when its gradient norm exceeds
    ``restart_grad_norm`` (or is not finite) it restarts from its initialization with half the step,
    at most ``max_restarts`` times (then it is ``diverged``). ``max_steps`` bounds each attempt.
    """

    lr: float = 0.1
    tol: float = 1e-9
    max_steps: int = 200_000
    restart_grad_norm: float = 1e4
    max_restarts: int = 20
    newton_polish: bool = False
    newton_polish_at: float = 1e-4  # switch to Newton steps once stationarity falls below this
    newton_max_steps: int = 40
    curve_points: int = 64  # loss-curve samples kept per run
    # chatter at a kink (piecewise-linear nets): every stall_window steps a replica whose loss fell by
    # less than stall_rtol (relative) since the last check stops as "stalled" (0: never)
    stall_window: int = 0
    stall_rtol: float = 1e-9
    stall_lr_factor: float = 0.1  # a stalled replica first continues with its step times this factor,
    stall_reductions: int = 2  # up to this many times, and only then stops as "stalled"

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not self.tol > 0:
            raise ValueError(f"tol must be > 0, got {self.tol}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.stall_window < 0 or not self.stall_rtol >= 0:
            raise ValueError(
                f"stall_window and stall_rtol must be >= 0, got {self.stall_window}, {self.stall_rtol}"
            )


@dataclass(frozen=True)
class TrainResult:
    """End points and bookkeeping for R replicas."""

    theta: Tensor  # (R, P) end points
    theta0: Tensor  # (R, P) initializations
    steps: Tensor  # (R,) gradient steps in the final attempt (plus Newton steps)
    total_steps: Tensor  # (R,) over all attempts
    lr: Tensor  # (R,) step size of the final attempt
    restarts: Tensor  # (R,)
    converged: Tensor  # (R,) bool: stationarity <= tol
    diverged: Tensor  # (R,) bool
    stop_reason: list[str]  # per replica: converged, max_steps, stalled or diverged
    curve_steps: Tensor  # (C,) step indices where the loss curve was sampled
    curve: Tensor  # (R, C) loss at those steps (NaN once a replica has stopped)
    seconds: float


def train(
    landscape: Landscape,
    theta0: Tensor,
    config: TrainConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    budget: Tensor | None = None,
) -> TrainResult:
    """Run batched gradient descent from ``theta0: (R, P)`` until every replica stops.

    ``progress(n_done, R)`` is called whenever replicas stop. ``budget: (R,)`` optionally caps each
    replica's steps below ``max_steps`` (so a replica's end point never depends on its chunk-mates).
    """
    start = time.perf_counter()
    R = theta0.shape[0]
    device = theta0.device
    theta = theta0.clone()
    lr = torch.full((R,), config.lr, dtype=theta0.dtype, device=device)
    steps = torch.zeros(R, dtype=torch.long, device=device)
    total = torch.zeros(R, dtype=torch.long, device=device)
    restarts = torch.zeros(R, dtype=torch.long, device=device)
    converged = torch.zeros(R, dtype=torch.bool, device=device)
    diverged = torch.zeros(R, dtype=torch.bool, device=device)
    stalled = torch.zeros(R, dtype=torch.bool, device=device)
    limit = torch.full((R,), config.max_steps, dtype=torch.long, device=device)
    if budget is not None:
        limit = torch.minimum(limit, budget.to(device=device, dtype=torch.long))
    window = config.stall_window
    checkpoint = torch.full((R,), math.inf, dtype=theta0.dtype, device=device)  # loss at the last check
    reductions = torch.zeros(R, dtype=torch.long, device=device)  # step reductions after stalls
    curve_every = max(1, config.max_steps // config.curve_points)
    curve_steps = torch.arange(0, config.max_steps, curve_every, device=device)
    curve = torch.full((R, len(curve_steps)), math.nan, dtype=theta0.dtype, device=device)

    active = torch.arange(R, device=device)  # indices of running replicas
    x = theta.clone()  # (A, P): the active replicas' current points
    x_lr = lr.clone()
    step = torch.zeros(R, dtype=torch.long, device=device)[active]
    polish_at = config.newton_polish_at if config.newton_polish else -1.0
    n_done = 0
    while active.numel() > 0:
        g = landscape.grad(x)  # (A, P)
        stat = landscape.stationarity_from_grad(x, g)  # (A,)
        gnorm = g.norm(dim=-1)
        if config.curve_points > 0:
            on_grid = (step % curve_every == 0) & (step < config.max_steps)
            if bool(on_grid.any()):
                rows = active[on_grid]
                curve[rows, step[on_grid] // curve_every] = landscape.loss(x[on_grid])
        blew_up = ~torch.isfinite(gnorm) | (gnorm > config.restart_grad_norm)
        done = stat <= config.tol
        out_of_budget = step >= limit[active]
        polish = stat <= polish_at
        if window > 0:
            check = (step > 0) & (step % window == 0) & ~done & ~blew_up & ~polish
            if bool(check.any()):
                rows = active[check]
                now = landscape.loss(x[check])
                stuck = ~(now < checkpoint[rows] - config.stall_rtol * now.abs())
                checkpoint[rows] = now
                # a stuck replica with reductions left continues with a smaller step; else it stops
                slower = stuck & (reductions[rows] < config.stall_reductions)
                reductions[rows[slower]] += 1
                checkpoint[rows[slower]] = math.inf
                where = torch.nonzero(check).squeeze(-1)
                x_lr[where[slower]] = x_lr[where[slower]] * config.stall_lr_factor
                stalled[rows] = stuck & ~slower
                out_of_budget = out_of_budget | (check & stalled[active])
        if bool(blew_up.any()):
            rows = active[blew_up]
            restarts[rows] += 1
            total[rows] += step[blew_up]
            x_lr[blew_up] = x_lr[blew_up] / 2
            x[blew_up] = theta0[rows]
            step[blew_up] = -1  # back to 0 after this iteration's increment
            checkpoint[rows] = math.inf
            gave_up = blew_up & (restarts[active] > config.max_restarts)
            diverged[active[gave_up]] = True
            done = done | gave_up
            g = torch.where(blew_up.unsqueeze(-1), torch.zeros_like(g), g)
        leaving = done | out_of_budget | polish
        if bool(leaving.any()):
            rows = active[leaving]
            theta[rows] = x[leaving]
            steps[rows] = step[leaving]
            lr[rows] = x_lr[leaving]
            converged[rows] = done[leaving] & ~diverged[rows]
            keep = ~leaving
            active, x, x_lr, step, g = active[keep], x[keep], x_lr[keep], step[keep], g[keep]
            n_done += int(leaving.sum())
            if progress is not None:
                progress(n_done, R)
            if active.numel() == 0:
                break
        x = x - x_lr.unsqueeze(-1) * g
        step = step + 1

    if config.newton_polish:
        # replicas stalled at a kink are left where descent stopped (Newton needs a smooth point)
        theta, steps, converged = _newton_polish(
            landscape, theta, steps, converged, diverged | stalled, config
        )
        # where Newton stalls (nearly singular Hessians), plain descent finishes each replica's own budget
        unfinished = torch.nonzero(~converged & ~diverged & ~stalled & (steps < config.max_steps)).squeeze(-1)
        if unfinished.numel() > 0:
            rest = dataclasses.replace(config, newton_polish=False)
            tail = train(landscape, theta[unfinished], rest, budget=config.max_steps - steps[unfinished])
            theta[unfinished] = tail.theta
            steps[unfinished] += tail.steps
            converged[unfinished] = tail.converged
            stalled[unfinished] = torch.tensor(
                [reason == "stalled" for reason in tail.stop_reason], dtype=torch.bool, device=device
            )
    total += steps
    reasons = [
        "diverged"
        if bool(diverged[r])
        else "converged"
        if bool(converged[r])
        else "stalled"
        if bool(stalled[r])
        else "max_steps"
        for r in range(R)
    ]
    return TrainResult(
        theta=theta,
        theta0=theta0,
        steps=steps,
        total_steps=total,
        lr=lr,
        restarts=restarts,
        converged=converged,
        diverged=diverged,
        stop_reason=reasons,
        curve_steps=curve_steps,
        curve=curve,
        seconds=time.perf_counter() - start,
    )


def _newton_polish(
    landscape: Landscape,
    theta: Tensor,
    steps: Tensor,
    converged: Tensor,
    diverged: Tensor,
    config: TrainConfig,
) -> tuple[Tensor, Tensor, Tensor]:
    """Newton steps theta <- theta - pinv(H) grad on replicas near a critical point.

    The pseudo-inverse drops eigenvalues below 1e-10 |H|, so symmetry-induced zero eigenvalues and the
    flat directions of degenerate minima (over-parameterized students) do not blow up; there the
    iteration still converges linearly (about 4x per step), far faster than gradient descent. A step
    is kept only if it lowers the stationarity measure.
    """
    theta = theta.clone()
    steps = steps.clone()
    converged = converged.clone()
    rows = torch.nonzero(~diverged).squeeze(-1)
    if rows.numel() == 0:
        return theta, steps, converged
    x = theta[rows]
    stat = landscape.stationarity(x)
    stuck = torch.zeros_like(stat, dtype=torch.bool)  # negative curvature seen: left to descent
    for _ in range(config.newton_max_steps):
        todo = (stat > config.tol) & ~stuck
        if not bool(todo.any()):
            break
        H = landscape.hessian(x[todo])  # (A, P, P)
        g = landscape.grad(x[todo])
        ev, U = torch.linalg.eigh(0.5 * (H + H.transpose(-1, -2)))  # (A, P), (A, P, P)
        # Newton converges to saddles too: where the curvature is clearly negative, hand the replica
        # back to gradient descent (which escapes) instead of polishing it onto the saddle
        saddle = ev[:, 0] < -1e-6 * ev.abs().amax(dim=-1)
        if bool(saddle.any()):
            idx_saddle = torch.nonzero(todo).squeeze(-1)[saddle]
            stuck[idx_saddle] = True
        keep = ev.abs() > 1e-10 * ev.abs().amax(dim=-1, keepdim=True)
        inv = torch.where(keep, 1.0 / torch.where(keep, ev, torch.ones_like(ev)), torch.zeros_like(ev))
        delta = (U * inv.unsqueeze(-2)) @ (U.transpose(-1, -2) @ g.unsqueeze(-1))
        delta = delta.squeeze(-1)
        # backtracking: the first of the steps delta, delta/2, delta/4, delta/8 that lowers the measure
        cand = x[todo] - delta
        cand_stat = landscape.stationarity(cand)
        cand_stat[saddle] = math.inf  # never step towards a saddle
        for shrink in (0.5, 0.25, 0.125):
            worse = ~(cand_stat < stat[todo])
            if not bool(worse.any()):
                break
            worse = worse & ~saddle
            if not bool(worse.any()):
                break
            retry = x[todo][worse] - shrink * delta[worse]
            cand[worse] = retry
            cand_stat[worse] = landscape.stationarity(retry)
        better = cand_stat < stat[todo]
        idx = torch.nonzero(todo).squeeze(-1)[better]
        x[idx] = cand[better]
        stat[idx] = cand_stat[better]
        steps[rows[idx]] += 1
        if not bool(better.any()):
            break
    theta[rows] = x
    converged[rows] = stat <= config.tol
    return theta, steps, converged
