"""The compiled engine of :func:`study.training.gd.train`: each replica descends in its own compiled
loop (:mod:`study.training.compiled_loop`) on CPU threads, then replicas at their Newton switch
point take the guarded Newton finish (batched torch, :func:`study.training.newton.newton_finish`);
refused ones resume descent with a 100 times lower switch point, as in the torch engine.

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
from study.landscapes.teacher_student import TeacherStudentKernel
from study.training.newton import newton_finish
from study.training.protocol import TrainConfig, TrainResult, log_grid
from study.training.teacher_student_kernel import descend_rows, padded, teacher_term

_STEP, _TOTAL, _RESTARTS, _REDUCTIONS = range(4)
_LR, _CHECKPOINT, _SWITCH = range(3)
_CONVERGED, _DIVERGED, _STALLED, _SWITCHED, _FINISHED = range(5)


def warm_up() -> float:
    """Compile (or load from numba's cache) the loop for both teacher kinds; seconds it took."""
    start = time.perf_counter()
    for identity in (True, False):
        V = np.eye(2)
        theta0 = np.full((1, 2, 2), 0.5)
        theta0[0, 1, 0] = -0.3
        _run(theta0, TeacherStudentKernel(V, identity), TrainConfig(max_steps=3), None, None, threads=1)
    return time.perf_counter() - start


def _run(
    theta0: np.ndarray,
    kernel: TeacherStudentKernel,
    config: TrainConfig,
    budget: np.ndarray | None,
    progress: Callable[[int, int], None] | None,
    *,
    threads: int,
    landscape: Landscape | None = None,
) -> dict[str, np.ndarray]:
    """Descent (and Newton finish, given the landscape) from ``theta0: (R, n, d)``; the state arrays."""
    R = theta0.shape[0]
    theta = theta0.copy()  # (R, n, d)
    ints = np.zeros((R, 4), dtype=np.int64)
    floats = np.empty((R, 3))
    floats[:, _LR] = config.lr
    floats[:, _CHECKPOINT] = math.inf
    floats[:, _SWITCH] = config.newton_polish_at if config.newton_polish else -1.0
    flags = np.zeros((R, 5), dtype=np.bool_)
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
    curve = np.full((R, curve_steps.shape[0]), math.nan)  # (R, C)
    newton_steps = np.zeros(R, dtype=np.int64)
    term = teacher_term(kernel.V)
    Vp = np.zeros((kernel.V.shape[0], padded(kernel.V.shape[1])))  # (k, dp)
    Vp[:, : kernel.V.shape[1]] = kernel.V
    pending = np.arange(R, dtype=np.int64)
    n_done = 0
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    try:
        while pending.size > 0:
            flags[pending, _FINISHED] = False
            rows = pending

            def descend(rows: np.ndarray = rows) -> None:
                descend_rows(  # type: ignore[call-arg]
                    rows,
                    theta0,
                    theta,
                    kernel.V,
                    Vp,
                    kernel.identity,
                    term,
                    ints,
                    floats,
                    flags,
                    limit,
                    settings,
                    curve_steps,
                    curve,
                )

            _with_progress(descend, pending, flags, n_done, R, progress)
            left = pending[~flags[pending, _SWITCHED]]
            n_done += left.size
            pending = pending[flags[pending, _SWITCHED]]
            if pending.size == 0 or landscape is None:
                break
            start = torch.as_tensor(theta[pending].reshape(pending.size, -1))
            finish = newton_finish(landscape, start, tol=config.tol, max_steps=config.newton_max_steps)
            accepted = finish.accepted.numpy()
            ok = pending[accepted]
            theta[ok] = finish.theta[finish.accepted].numpy().reshape(ok.size, *theta.shape[1:])
            newton_steps[ok] = finish.steps[finish.accepted].numpy()
            ints[ok, _STEP] += newton_steps[ok]
            flags[ok, _CONVERGED] = True
            n_done += ok.size
            if progress is not None and ok.size > 0:
                progress(n_done, R)
            pending = pending[~accepted]  # refused: resume descent, try again 100x lower
            floats[pending, _SWITCH] /= 100
    finally:
        numba.set_num_threads(previous)
    return {
        "theta": theta,
        "ints": ints,
        "floats": floats,
        "flags": flags,
        "curve_steps": curve_steps,
        "curve": curve,
        "newton_steps": newton_steps,
    }


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
            now = int((flags[rows, _FINISHED] & ~flags[rows, _SWITCHED]).sum())
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
    progress(n_done + int((~flags[rows, _SWITCHED]).sum()), R)


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
    assert isinstance(kernel, TeacherStudentKernel)
    R = theta0.shape[0]
    n = landscape.cfg.n
    start_points = np.ascontiguousarray(theta0.detach().numpy().reshape(R, n, -1), dtype=np.float64)
    state = _run(
        start_points,
        kernel,
        config,
        None if budget is None else budget.cpu().numpy(),
        progress,
        threads=torch.get_num_threads() if threads is None else threads,
        landscape=landscape,
    )
    ints, flags = state["ints"], state["flags"]
    diverged, converged, stalled = flags[:, _DIVERGED], flags[:, _CONVERGED], flags[:, _STALLED]
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
    return TrainResult(
        theta=torch.as_tensor(state["theta"].reshape(R, -1)),
        theta0=theta0,
        steps=torch.as_tensor(ints[:, _STEP].copy()),
        total_steps=torch.as_tensor(ints[:, _TOTAL] + ints[:, _STEP]),
        lr=torch.as_tensor(state["floats"][:, _LR].copy()),
        restarts=torch.as_tensor(ints[:, _RESTARTS].copy()),
        converged=torch.as_tensor(converged.copy()),
        diverged=torch.as_tensor(diverged.copy()),
        stop_reason=reasons,
        curve_steps=torch.as_tensor(state["curve_steps"]),
        curve=torch.as_tensor(state["curve"]),
        seconds=time.perf_counter() - start,
        newton_steps=torch.as_tensor(state["newton_steps"]),
    )
