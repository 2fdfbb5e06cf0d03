"""The CUDA engine of :func:`study.training.gd.train`: each replica descends in its own loop on the
device (the landscape's :class:`study.landscapes.kernels.CudaDescent`, asked for through
``landscape.cuda_descent()``), replicas of several landscapes (cells) in one launch; replicas at their
Newton switch point then take the guarded Newton finish (batched torch on the landscape's device) and
refused ones resume in the next launch with a 100 times lower switch point, as in the other engines.

The state lives on the host between launches (a launch runs every pending replica to its exit, so
there are as many launches as Newton rounds, usually one or two). Under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, set before numba is imported) the same code runs on CPU: the contract
tests use it (``tests/training/test_cuda_engine.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from study.landscapes.base import Landscape
from study.landscapes.kernels import CUDA_SHARED_LIMIT, FINISHED, SWITCHED, DescentState
from study.training.compiled import initial_state, newton_round, result_from_state
from study.training.protocol import TrainConfig, TrainResult

THREADS = 32  # lanes per replica (one warp); the simulator runs fewer faster


def cuda_fits(landscape: Landscape, theta0: Tensor) -> bool:
    """Whether the landscape has a CUDA loop whose replica fits a block, for a float64 start."""
    make = getattr(landscape, "cuda_descent", None)  # duck-typed landscapes have none
    if make is None or theta0.dtype != torch.float64:
        return False
    kernel = make()
    return kernel is not None and kernel.shared_bytes() <= CUDA_SHARED_LIMIT


def cuda_unavailable() -> str | None:
    """None where numba-cuda compiles and runs a kernel here (a device, or its simulator; probed once
    per process: :func:`study.training.cuda_probe.cuda_probe`), else why not, in one line."""
    from study.training.cuda_probe import cuda_probe

    probe = cuda_probe()
    return None if probe.ok else probe.detail


def train_cuda(
    landscape: Landscape,
    theta0: Tensor,
    config: TrainConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    budget: Tensor | None = None,
    threads: int = THREADS,
) -> TrainResult:
    """:func:`study.training.gd.train` by the CUDA engine (``theta0: (R, P)`` float64)."""
    return train_cuda_cells(
        [(landscape, theta0)], config, budgets=[budget], progress=progress, threads=threads
    )[0]


def train_cuda_cells(
    problems: Sequence[tuple[Landscape, Tensor]],
    config: TrainConfig,
    *,
    budgets: Sequence[Tensor | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    threads: int = THREADS,
) -> list[TrainResult]:
    """Train several cells (landscape, ``theta0: (R_s, P_s)``) in one launch per Newton round: the
    :class:`TrainResult` of each, as :func:`study.training.gd.train` would return it. Every landscape's
    ``cuda_descent()`` must be of one kind (the teacher-student grid: any k, n, d and teacher)."""
    from numba import cuda

    start = time.perf_counter()
    kernels = [k for landscape, _ in problems if (k := landscape.cuda_descent()) is not None]
    if len(kernels) != len(problems) or len({type(k) for k in kernels}) != 1:
        raise ValueError("engine 'cuda': every landscape of a launch needs a CUDA loop of one kind")
    sizes = [theta0.shape[0] for _, theta0 in problems]
    widest = max(theta0.shape[1] for _, theta0 in problems)
    R = sum(sizes)
    starts = np.zeros((R, widest))  # (R, P_max): each row padded to the widest cell
    limits = np.full(R, config.max_steps, dtype=np.int64)
    cell = np.repeat(np.arange(len(problems), dtype=np.int64), sizes)  # (R,)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    for s, (_, theta0) in enumerate(problems):
        starts[bounds[s] : bounds[s + 1], : theta0.shape[1]] = theta0.detach().cpu().numpy()
        if budgets is not None and budgets[s] is not None:
            limits[bounds[s] : bounds[s + 1]] = budgets[s].cpu().numpy()  # type: ignore[union-attr]
    state = initial_state(starts, config, limits)
    newton_steps = np.zeros(R, dtype=np.int64)
    device_cell = cuda.to_device(cell)
    pending = np.arange(R, dtype=np.int64)
    n_done = 0
    while pending.size > 0:
        state.flags[pending, FINISHED] = False
        on_device = DescentState(*(cuda.to_device(a) for a in state))
        kernels[0].descend_cells(kernels, device_cell, cuda.to_device(pending), on_device, threads=threads)
        for there, here in zip(on_device, state, strict=True):
            there.copy_to_host(here)
        switched = pending[state.flags[pending, SWITCHED]]
        n_done += pending.size - switched.size
        if progress is not None:
            progress(n_done, R)
        refused = []
        for s, (landscape, _) in enumerate(problems):
            rows = switched[cell[switched] == s]
            if rows.size > 0:
                ok, again = newton_round(landscape, config, state, rows, newton_steps)
                n_done += ok.size
                refused.append(again)
        if progress is not None and switched.size > 0:
            progress(n_done, R)
        pending = np.concatenate(refused) if refused else pending[:0]
    seconds = time.perf_counter() - start
    results = []
    for s, (_, theta0) in enumerate(problems):
        part = slice(bounds[s], bounds[s + 1])
        mine = state._replace(
            theta0=state.theta0[part],
            theta=state.theta[part],
            ints=state.ints[part],
            floats=state.floats[part],
            flags=state.flags[part],
            limit=state.limit[part],
            curve=state.curve[part],
        )
        results.append(result_from_state(mine, newton_steps[part], theta0, seconds))
    return results
