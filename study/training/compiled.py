"""The compiled engine of :func:`study.training.gd.train`: each replica descends in its own compiled
loop (the landscape's :class:`study.landscapes.kernels.DescentKernel`, asked for through
``landscape.descent_kernel()``) on CPU threads, then replicas at their Newton switch point take the
guarded Newton finish (batched torch, :func:`study.training.newton.newton_finish`); refused ones resume
descent with a 100 times lower switch point, as in the torch engine.

Compilation happens once per process (numba's on-disk cache makes later processes cheap);
:func:`warm_up` triggers it explicitly and returns its seconds, so benchmarks and workers can report
it apart from throughput.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numba
import numpy as np
import torch
from torch import Tensor

from study.landscapes.base import Landscape
from study.landscapes.kernels import (
    CHECKPOINT,
    CONVERGED,
    DIVERGED,
    FINISHED,
    LR,
    RESTARTS,
    STALLED,
    STEP,
    SWITCH,
    SWITCHED,
    TOTAL,
    DescentKernel,
    DescentState,
)
from study.training.newton import newton_finish
from study.training.protocol import TrainConfig, TrainResult, log_grid


def warm_up(landscape: Landscape) -> float:
    """Compile (or load from numba's cache) the landscape's loop (one specialization serves every
    teacher and size); seconds it took."""
    start = time.perf_counter()
    kernel = landscape.descent_kernel()
    if kernel is not None:
        theta0 = landscape.init([0]).detach().cpu().to(torch.float64).numpy()
        _run(theta0, kernel, TrainConfig(max_steps=3), None, None, threads=1)
    return time.perf_counter() - start


def initial_state(theta0: np.ndarray, config: TrainConfig, budget: np.ndarray | None) -> DescentState:
    """The state of replicas about to start from ``theta0: (R, P)`` (host arrays; budgets ``(R,)``)."""
    R = theta0.shape[0]
    floats = np.empty((R, 3))
    floats[:, LR] = config.lr
    floats[:, CHECKPOINT] = math.inf
    floats[:, SWITCH] = config.newton_polish_at if config.newton_polish else -1.0
    limit = np.full(R, config.max_steps, dtype=np.int64)
    if budget is not None:
        limit = np.minimum(limit, budget.astype(np.int64))
    settings = np.array(
        [
            config.tol,
            config.restart_grad_norm,
            config.max_restarts,
            config.stall_window,
            config.stall_rtol,
            config.stall_lr_factor,
            config.stall_reductions,
        ],
        dtype=np.float64,
    )
    curve_steps = log_grid(config.max_steps, config.curve_points).numpy()  # (C,)
    return DescentState(
        theta0=theta0,
        theta=theta0.copy(),  # (R, P)
        ints=np.zeros((R, 4), dtype=np.int64),
        floats=floats,
        flags=np.zeros((R, 5), dtype=np.bool_),
        limit=limit,
        settings=settings,
        curve_steps=curve_steps,
        curve=np.full((R, curve_steps.shape[0]), math.nan),  # (R, C)
    )


def _run(
    theta0: np.ndarray,
    kernel: DescentKernel,
    config: TrainConfig,
    budget: np.ndarray | None,
    progress: Callable[[int, int], None] | None,
    *,
    threads: int,
    landscape: Landscape | None = None,
) -> tuple[DescentState, np.ndarray]:
    """Descent (and Newton finish, given the landscape) from ``theta0: (R, P)``; the final state and
    the accepted Newton steps ``(R,)``."""
    R = theta0.shape[0]
    state = initial_state(theta0, config, budget)
    flags = state.flags
    newton_steps = np.zeros(R, dtype=np.int64)
    pending = np.arange(R, dtype=np.int64)
    n_done = 0
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    try:
        while pending.size > 0:
            flags[pending, FINISHED] = False
            rows = pending

            def descend(rows: np.ndarray = rows) -> None:
                kernel.descend(rows, state)

            _with_progress(descend, pending, flags, n_done, R, progress)
            left = pending[~flags[pending, SWITCHED]]
            n_done += left.size
            pending = pending[flags[pending, SWITCHED]]
            if pending.size == 0 or landscape is None:
                break
            ok, pending = newton_round(landscape, config, state, pending, newton_steps)
            n_done += ok.size
            if progress is not None and ok.size > 0:
                progress(n_done, R)
    finally:
        numba.set_num_threads(previous)
    return state, newton_steps


def newton_round(
    landscape: Landscape,
    config: TrainConfig,
    state: DescentState,
    pending: np.ndarray,
    newton_steps: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The guarded Newton finish (batched torch) on the host state's replicas ``pending`` at their
    switch point: (accepted rows, refused rows, whose switch point is now 100 times lower)."""
    P = landscape.n_params  # a packed launch pads rows to its widest cell
    start = torch.as_tensor(state.theta[pending, :P]).to(landscape.device)
    finish = newton_finish(landscape, start, tol=config.tol, max_steps=config.newton_max_steps)
    accepted = finish.accepted.cpu().numpy()
    ok = pending[accepted]
    state.theta[ok, :P] = finish.theta[finish.accepted].cpu().numpy()
    newton_steps[ok] = finish.steps[finish.accepted].cpu().numpy()
    state.ints[ok, STEP] += newton_steps[ok]
    state.flags[ok, CONVERGED] = True
    refused = pending[~accepted]  # resume descent, try again 100x lower
    state.floats[refused, SWITCH] /= 100
    return ok, refused


def _with_progress(
    call: Callable[[], None],
    rows: np.ndarray,
    flags: np.ndarray,
    n_done: int,
    R: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Run the (GIL-free) kernel while a thread reports replicas as they stop."""
    if progress is None:
        call()
        return
    stop = threading.Event()

    def poll() -> None:
        seen = -1
        while not stop.wait(0.5):
            now = int((flags[rows, FINISHED] & ~flags[rows, SWITCHED]).sum())
            if now != seen:
                seen = now
                progress(n_done + now, R)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        call()
    finally:
        stop.set()
        watcher.join()
    progress(n_done + int((~flags[rows, SWITCHED]).sum()), R)


def train_compiled(
    landscape: Landscape,
    theta0: Tensor,
    config: TrainConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    budget: Tensor | None = None,
    threads: int | None = None,
) -> TrainResult:
    """:func:`study.training.gd.train` by the compiled engine (``theta0: (R, P)`` float64 on CPU);
    ``threads`` defaults to torch's intra-op thread count (a Ray task's CPUs)."""
    start = time.perf_counter()
    kernel = landscape.descent_kernel()
    if kernel is None:
        raise ValueError(f"engine 'compiled': {landscape.name} has no compiled kernel")
    state, newton_steps = _run(
        np.ascontiguousarray(theta0.detach().numpy(), dtype=np.float64),
        kernel,
        config,
        None if budget is None else budget.cpu().numpy(),
        progress,
        threads=torch.get_num_threads() if threads is None else threads,
        landscape=landscape,
    )
    return result_from_state(state, newton_steps, theta0, time.perf_counter() - start)


def result_from_state(
    state: DescentState, newton_steps: np.ndarray, theta0: Tensor, seconds: float
) -> TrainResult:
    """The :class:`TrainResult` of a finished host state (``theta`` columns beyond ``theta0``'s P,
    the padding of a packed launch, are dropped)."""
    ints, flags = state.ints, state.flags
    R, P = theta0.shape
    diverged, converged, stalled = flags[:, DIVERGED], flags[:, CONVERGED], flags[:, STALLED]
    reasons = [
        "diverged"
        if diverged[r]
        else "converged"
        if converged[r]
        else "stalled"
        if stalled[r]
        else "max_steps"
        for r in range(R)
    ]
    device = theta0.device

    def tensor(a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.ascontiguousarray(a)).to(device)

    return TrainResult(
        theta=tensor(state.theta[:, :P]),
        theta0=theta0,
        steps=tensor(ints[:, STEP]),
        total_steps=tensor(ints[:, TOTAL] + ints[:, STEP]),
        lr=tensor(state.floats[:, LR]),
        restarts=tensor(ints[:, RESTARTS]),
        converged=tensor(converged),
        diverged=tensor(diverged),
        stop_reason=reasons,
        curve_steps=tensor(state.curve_steps),
        curve=tensor(state.curve),
        seconds=seconds,
        newton_steps=tensor(newton_steps),
    )


def escape_compiled(
    landscape: Landscape, starts: Tensor, threshold: Tensor, *, lr: float, steps: int
) -> Tensor | None:
    """The lowest loss along plain descents of step ``lr`` from ``starts: (E, P)`` (float64, CPU), each
    stopping once below its ``threshold: (E,)`` or not finite, ``(E,)``: the landscape's compiled
    ``escape_descents`` (the escape test's); None where it has none (the caller runs the torch loop).
    Threads: torch's intra-op count, as training."""
    if starts.device.type != "cpu" or starts.dtype != torch.float64:
        return None
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    try:
        return landscape.escape_descents(starts, threshold, lr=lr, steps=steps)
    finally:
        numba.set_num_threads(previous)
