"""What training is asked and what it returns: the descent protocol's configuration (both engines
read it), its result, and the log-spaced grid of the loss curve."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ENGINES = ("auto", "compiled", "cuda", "torch")


@dataclass(frozen=True)
class TrainConfig:
    """Gradient descent with the published protocol's defaults.

    A replica stops when ``landscape.stationarity <= tol`` ("converged"), at ``max_steps`` ("max_steps"),
    or, with ``stall_window`` > 0, when its loss stops decreasing ("stalled"); when its gradient norm exceeds
    ``restart_grad_norm`` (or is not finite) it restarts from its initialization with half the step,
    at most ``max_restarts`` times (then it is ``diverged``). ``max_steps`` bounds each attempt.

    With ``newton_polish``, a replica whose stationarity falls below ``newton_polish_at`` tries a
    guarded Newton finish (:func:`newton_finish`); if the finish is refused (negative curvature, no
    progress, loss above the switch point's) the replica resumes gradient descent from where it
    switched, and tries again only below a 100 times smaller stationarity.
    """

    lr: float = 0.1
    tol: float = 1e-9
    max_steps: int = 200_000
    restart_grad_norm: float = 1e4
    max_restarts: int = 20
    newton_polish: bool = False
    newton_polish_at: float = 1e-4  # switch to Newton steps once stationarity falls below this
    newton_max_steps: int = 40
    curve_points: int = 64  # loss-curve grid: this many log-spaced steps over [0, max_steps)
    # chatter at a kink (piecewise-linear nets): every stall_window steps a replica whose loss fell by
    # less than stall_rtol (relative) since the last check stops as "stalled" (0: never)
    stall_window: int = 0
    stall_rtol: float = 1e-9
    stall_lr_factor: float = 0.1  # a stalled replica first continues with its step times this factor,
    stall_reductions: int = 2  # up to this many times, and only then stops as "stalled"
    # "compiled": the landscape's compiled per-replica loop on CPU (study.training.compiled);
    # "cuda": its per-replica loop on a CUDA device (study.training.cuda_engine); "torch": the
    # batched torch loop (every landscape, every device); "auto": compiled where the landscape has one
    # and runs on CPU in float64, cuda where it has one and runs on CUDA in float64, else torch. All
    # give the same end points.
    engine: str = "auto"

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
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if not self.newton_polish_at > 0:
            raise ValueError(f"newton_polish_at must be > 0, got {self.newton_polish_at}")


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
    curve_steps: Tensor  # (C,) log-spaced step indices where the loss curve was sampled
    curve: Tensor  # (R, C) loss at those steps (NaN once a replica has stopped); the final loss
    # at total_steps completes it (see study.record.loss_history)
    seconds: float
    newton_steps: Tensor | None = None  # (R,) accepted Newton steps (included in steps)


def log_grid(max_steps: int, points: int, *, device: torch.device | str = "cpu") -> Tensor:
    """Distinct integer steps in [0, max_steps), evenly spaced in log(1 + step): ``points`` candidates
    10^(j log10(max_steps) / (points - 1)) - 1 rounded, so step 0 is always on it. ``(C,)``, C <= points."""
    if points <= 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    candidates = torch.logspace(0, math.log10(max_steps), max(2, points), dtype=torch.float64) - 1
    steps = torch.unique(candidates.round().long().clamp(0, max_steps - 1))
    return steps.to(device)


def grid_columns(grid: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
    """For steps ``(A,)``: whether each is on the sorted ``grid (C,)`` and its column there."""
    column = torch.searchsorted(grid, step).clamp(max=max(0, grid.numel() - 1))
    return grid[column] == step, column
