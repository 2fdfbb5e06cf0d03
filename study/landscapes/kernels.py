"""The compiled-descent protocol: what a landscape's numba kernels receive and provide.

A landscape may compile its own descent loop (``Landscape.descent_kernel()`` for CPU threads,
``Landscape.cuda_descent()`` for a CUDA device); the generic engines of ``study.training`` build the
per-replica state below, ask the landscape for its kernel and never name a landscape. The state
travels as one record (:class:`DescentState`, a NamedTuple numba types as a tuple of arrays), so no
kernel signature repeats its fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

# columns of DescentState.ints, .floats and .flags
STEP, TOTAL, RESTARTS, REDUCTIONS = range(4)
LR, CHECKPOINT, SWITCH = range(3)
CONVERGED, DIVERGED, STALLED, SWITCHED, FINISHED = range(5)
#: the order of DescentState.settings
SETTINGS = (
    "tol",
    "restart_grad_norm",
    "max_restarts",
    "stall_window",
    "stall_rtol",
    "stall_lr_factor",
    "stall_reductions",
)


class DescentState(NamedTuple):
    """Every replica's descent state, float64 unless said; host numpy arrays for the CPU loop, device
    arrays for the CUDA one. A kernel reads and writes only its replica's rows.

    ``theta0, theta: (R, P)`` starts and points (written back when a replica leaves; rows of a packed
    CUDA launch are padded to the widest cell's P); ``ints: (R, 4)`` int64 step, total, restarts,
    reductions; ``floats: (R, 3)`` lr, stall checkpoint, switch point (-1: never); ``flags: (R, 5)``
    bool converged, diverged, stalled, switched, finished; ``limit: (R,)`` int64 step budgets;
    ``settings: (7,)`` in the order of :data:`SETTINGS`; ``curve: (R, C)`` the loss at the grid steps
    ``curve_steps: (C,)`` int64.
    """

    theta0: Any
    theta: Any
    ints: Any
    floats: Any
    flags: Any
    limit: Any
    settings: Any
    curve_steps: Any
    curve: Any


class DescentKernel(Protocol):
    """A landscape's compiled descent loop on CPU threads (the twin of the torch engine's loop)."""

    def descend(self, rows: np.ndarray, state: DescentState) -> None:
        """Run each replica of ``rows: (A,)`` from its state until it leaves (converged, diverged,
        stalled, out of budget or at its Newton switch point), on numba's threads."""
        ...


class CudaDescent(Protocol):
    """A landscape's descent loop on a CUDA device, one launch for replicas of several cells."""

    def shared_bytes(self) -> int:
        """Shared memory one replica of this cell needs while it descends."""
        ...

    def descend_cells(
        self, cells: Sequence[Any], cell: Any, rows: Any, state: DescentState, *, threads: int
    ) -> None:
        """Run the replicas ``rows: (A,)`` (device int64) of a packed launch, ``threads`` lanes each:
        replica r belongs to ``cells[cell[r]]`` (kernels of this same kind); ``state`` holds device
        arrays."""
        ...


#: bytes of dynamic shared memory a CUDA block gets without an opt-in; a cell needing more runs elsewhere
CUDA_SHARED_LIMIT = 48 * 1024
