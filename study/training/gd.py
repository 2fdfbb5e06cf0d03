"""Batched full-batch gradient descent with per-replica restarts and stopping (Safran & Shamir 2018),
optionally finished by guarded Newton steps.

All R replicas advance as one tensor computation; replicas that have stopped leave the active set and
cost no further updates. Each replica's trajectory depends only on its own initialization, so results
do not depend on which chunk a run is computed in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

from study.landscapes.base import Landscape
from study.training.newton import NewtonFinish, newton_finish
from study.training.protocol import ENGINES, TrainConfig, TrainResult, grid_columns, log_grid

__all__ = [
    "ENGINES",
    "NewtonFinish",
    "TrainConfig",
    "TrainResult",
    "grid_columns",
    "log_grid",
    "newton_finish",
    "train",
    "engine_for",
    "uses_compiled",
]


class _LossCurve:
    """The loss of each replica on a log-spaced grid of steps (:func:`log_grid`), counted over all its
    attempts as ``total_steps`` counts them, ``(R, C)``."""

    def __init__(self, R: int, config: TrainConfig, like: Tensor) -> None:
        self.enabled = config.curve_points > 0
        self.steps = log_grid(config.max_steps, config.curve_points, device=like.device)  # (C,)
        self.values = torch.full((R, len(self.steps)), math.nan, dtype=like.dtype, device=like.device)

    def record(self, landscape: Landscape, rows: Tensor, x: Tensor, step: Tensor) -> None:
        """Sample the replicas ``rows`` (at points ``x: (A, P)``, steps ``(A,)``) that sit on the grid."""
        if not self.enabled:
            return
        on_grid, column = grid_columns(self.steps, step)
        if bool(on_grid.any()):
            self.values[rows[on_grid], column[on_grid]] = landscape.loss(x[on_grid])


def uses_compiled(landscape: Landscape, theta0: Tensor, config: TrainConfig) -> bool:
    """Whether :func:`train` runs the compiled engine for this landscape, start and config (a
    ``ValueError`` naming ``engine`` if "compiled" is asked where it cannot run)."""
    kernel = getattr(landscape, "descent_kernel", None)  # duck-typed landscapes have none
    able = (
        kernel is not None
        and kernel() is not None
        and theta0.device.type == "cpu"
        and theta0.dtype == torch.float64
    )
    if config.engine == "compiled" and not able:
        raise ValueError(
            f"engine 'compiled' needs a landscape with a compiled kernel on CPU in float64; "
            f"{landscape.name} on {theta0.device.type} in {theta0.dtype} has none (use 'torch' or 'auto')"
        )
    return config.engine in ("auto", "compiled") and able


def engine_for(landscape: Landscape, theta0: Tensor, config: TrainConfig) -> str:
    """The engine :func:`train` runs: "compiled", "cuda" or "torch" (a ``ValueError`` naming ``engine``
    where the one asked for cannot run)."""
    if uses_compiled(landscape, theta0, config):
        return "compiled"
    if config.engine == "cuda" or (config.engine == "auto" and theta0.device.type == "cuda"):
        from study.training.cuda_engine import cuda_fits, cuda_unavailable

        if not cuda_fits(landscape, theta0):
            problem: str | None = (
                f"it needs a landscape with a CUDA loop that fits a block, in float64; "
                f"{landscape.name} in {theta0.dtype} has none"
            )
        else:  # a toolchain that cannot compile: "auto" trains with torch, "cuda" is refused
            problem = cuda_unavailable()
        if problem is None:
            return "cuda"
        if config.engine == "cuda":
            raise ValueError(f"engine 'cuda' cannot run: {problem} (use 'torch' or 'auto')")
    return "torch"


def train(
    landscape: Landscape,
    theta0: Tensor,
    config: TrainConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    budget: Tensor | None = None,
    batch: int | None = None,
) -> TrainResult:
    """Run batched gradient descent from ``theta0: (R, P)`` until every replica stops.

    ``progress(n_done, R)`` is called whenever replicas stop. ``budget: (R,)`` optionally caps each
    replica's steps below ``max_steps`` (so a replica's end point never depends on its chunk-mates).
    ``batch`` caps the working batch: at most that many replicas advance together, and a replica
    that stops is replaced by the next waiting one (a refill), so the batch stays full until the
    queue runs dry. Each replica's trajectory depends only on its own initialization: the end
    points do not depend on ``batch``.

    The loop is lean: an iteration costs the gradient, the stationarity measure, one combined test
    (some replica at its stopping or switch threshold, or its gradient norm above the restart
    threshold) and the update. Everything else (restarts, budgets, loss-curve samples, departures,
    refills) is handled only on the iterations where it can happen, which are known in advance
    (budgets, curve samples) or flagged by that test.
    """
    engine = engine_for(landscape, theta0, config)
    if engine == "compiled":
        from study.training.compiled import train_compiled

        return train_compiled(landscape, theta0, config, progress=progress, budget=budget)
    if engine == "cuda":
        from study.training.cuda_engine import train_cuda

        return train_cuda(landscape, theta0, config, progress=progress, budget=budget)
    start = time.perf_counter()
    R = theta0.shape[0]
    device = theta0.device
    batch = R if batch is None else max(1, batch)
    theta = theta0.clone()  # (R, P): each replica's current point
    lr = torch.full((R,), config.lr, dtype=theta0.dtype, device=device)
    steps = torch.zeros(R, dtype=torch.long, device=device)  # gradient steps in the current attempt
    total = torch.zeros(R, dtype=torch.long, device=device)  # steps of abandoned attempts
    restarts = torch.zeros(R, dtype=torch.long, device=device)
    converged = torch.zeros(R, dtype=torch.bool, device=device)
    diverged = torch.zeros(R, dtype=torch.bool, device=device)
    newton_steps = torch.zeros(R, dtype=torch.long, device=device)
    stalled = torch.zeros(R, dtype=torch.bool, device=device)
    limit = torch.full((R,), config.max_steps, dtype=torch.long, device=device)
    if budget is not None:
        limit = torch.minimum(limit, budget.to(device=device, dtype=torch.long))
    window = config.stall_window
    checkpoint = torch.full((R,), math.inf, dtype=theta0.dtype, device=device)  # loss at the last check
    reductions = torch.zeros(R, dtype=torch.long, device=device)  # step reductions after stalls
    # per-replica stationarity below which the Newton finish is tried (-1: never)
    switch_at = torch.full(
        (R,), config.newton_polish_at if config.newton_polish else -1.0, dtype=theta0.dtype, device=device
    )
    curve = _LossCurve(R, config, theta0)
    n_done = 0

    pending = torch.arange(R, device=device)
    while pending.numel() > 0:
        # gradient descent on the pending replicas until each stops or reaches its switch point
        queue = pending
        active = pending[:0]
        x, x_lr = theta[active], lr[active]
        offset = steps[active]  # (A,): a replica's step in its attempt is it - offset
        it = 0  # loop iterations in this pass
        stale = True  # membership or steps changed: recompute the per-replica caches below
        switched = []
        while True:
            if queue.numel() > 0 and active.numel() < batch:  # refill the working batch
                take, queue = queue[: batch - active.numel()], queue[batch - active.numel() :]
                active = torch.cat([active, take])
                x, x_lr = torch.cat([x, theta[take]]), torch.cat([x_lr, lr[take]])
                offset = torch.cat([offset, it - steps[take]])
                stale = True
            if active.numel() == 0:
                break
            if stale:
                # the stationarity at which a replica leaves descent (converged or switching to Newton)
                leave_at = torch.clamp(switch_at[active], min=config.tol)  # (A,)
                step = it - offset
                # the next iteration where some replica runs out of budget or sits on the curve grid
                event = it + int((limit[active] - step).clamp(min=0).min())
                if curve.enabled:
                    here = total[active] + step
                    column = torch.searchsorted(curve.steps, here)
                    ahead = column < curve.steps.numel()
                    if bool(ahead.any()):
                        gap = curve.steps[column[ahead].clamp(max=curve.steps.numel() - 1)] - here[ahead]
                        event = min(event, it + int(gap.min()))
                stale = False
            g = landscape.grad(x)  # (A, P)
            stat = landscape.stationarity_from_grad(x, g)  # (A,)
            gnorm = g.norm(dim=-1)
            flagged = window > 0 or it >= event
            if not flagged:  # NaN norms fail the comparison, so they are flagged too
                flagged = bool(((stat <= leave_at) | ~(gnorm <= config.restart_grad_norm)).any())
            if flagged:
                stale = True
                step = it - offset
                curve.record(landscape, active, x, total[active] + step)
                blew_up = ~torch.isfinite(gnorm) | (gnorm > config.restart_grad_norm)
                done = stat <= config.tol
                out_of_budget = step >= limit[active]
                switch = (stat <= switch_at[active]) & ~done
                if window > 0:
                    check = (step > 0) & (step % window == 0) & ~done & ~blew_up & ~switch
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
                    offset[blew_up] = it + 1  # step 0 at the next iteration
                    checkpoint[rows] = math.inf
                    gave_up = blew_up & (restarts[active] > config.max_restarts)
                    diverged[active[gave_up]] = True
                    done = done | gave_up
                    switch = switch & ~blew_up
                    g = torch.where(blew_up.unsqueeze(-1), torch.zeros_like(g), g)
                    step = torch.where(blew_up, -1, step)
                leaving = done | out_of_budget | switch
                if bool(leaving.any()):
                    rows = active[leaving]
                    theta[rows] = x[leaving]
                    steps[rows] = step[leaving]
                    lr[rows] = x_lr[leaving]
                    converged[rows] = done[leaving] & ~diverged[rows]
                    switched.append(active[switch])
                    keep = ~leaving
                    active, x, x_lr, offset, g = active[keep], x[keep], x_lr[keep], offset[keep], g[keep]
                    n_done += int((leaving & ~switch).sum())
                    if progress is not None:
                        progress(n_done, R)
                    if active.numel() == 0:
                        continue  # refill, or end the pass
            x = x - x_lr.unsqueeze(-1) * g
            it += 1

        # the guarded Newton finish on the replicas that reached their switch point
        pending = torch.cat(switched) if switched else pending[:0]
        if pending.numel() == 0:
            break
        finish = newton_finish(landscape, theta[pending], tol=config.tol, max_steps=config.newton_max_steps)
        ok = pending[finish.accepted]
        theta[ok] = finish.theta[finish.accepted]
        newton_steps[ok] = finish.steps[finish.accepted]
        steps[ok] += newton_steps[ok]
        converged[ok] = True
        n_done += int(ok.numel())
        if progress is not None and ok.numel() > 0:
            progress(n_done, R)
        pending = pending[~finish.accepted]  # refused: resume descent, try again 100x lower
        switch_at[pending] = switch_at[pending] / 100

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
        total_steps=total + steps,
        lr=lr,
        restarts=restarts,
        converged=converged,
        diverged=diverged,
        stop_reason=reasons,
        curve_steps=curve.steps,
        curve=curve.values,
        seconds=time.perf_counter() - start,
        newton_steps=newton_steps,
    )
