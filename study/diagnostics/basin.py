"""L4: quality of the initial basin, probed along the straight line from initialization to end point.

    theta(t) = (1 - t) theta0 + t theta,   t in [0, 1]
    largest_bump = max_t ( L(theta(t)) - min_{s < t} L(theta(s)) )^+

The bump is 0 exactly when the sampled profile is non-increasing; a positive bump is the height of the
largest barrier climbed after the lowest point seen so far (an upper bound on nothing: a straight line
is one path, so a bump does not prove that no monotone path exists).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from study.landscapes.base import Landscape


def straight_line_profile(
    landscape: Landscape,
    theta0: Tensor,
    theta: Tensor,
    points: int = 64,
    *,
    rtol: float = 1e-10,
) -> tuple[Tensor, Tensor, Tensor]:
    """Loss on ``points`` equispaced t in [0, 1] (both ends included) per replica.

    ``theta0, theta: (R, P) -> losses (R, points), monotone (R,) bool, largest_bump (R,)``. A profile
    is ``monotone`` when its largest bump is at most ``rtol * max(1, max_t |L|)`` (rounding on flat
    stretches); a non-finite profile is not monotone and its bump is NaN.
    """
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    t = torch.linspace(0.0, 1.0, points, dtype=torch.float64).tolist()
    # one batched loss call per t keeps memory at (R, P) whatever the model size
    losses = torch.stack([landscape.loss(torch.lerp(theta0, theta, s)) for s in t], dim=1)  # (R, T)
    running_min = torch.cummin(losses, dim=1).values  # (R, T): min over s <= t
    before = torch.cat([losses[:, :1], running_min[:, :-1]], dim=1)  # min over s < t (t = 0: itself)
    largest_bump = (losses - before).amax(dim=1).clamp_min(0.0)  # (R,)
    finite = torch.isfinite(losses).all(dim=1)
    largest_bump = torch.where(finite, largest_bump, torch.full_like(largest_bump, math.nan))
    scale = losses.abs().amax(dim=1).clamp_min(1.0)
    monotone = finite & (largest_bump <= rtol * scale)
    return losses, monotone, largest_bump


def basin_columns(
    landscape: Landscape, theta0: Tensor, theta: Tensor, *, points: int = 64
) -> dict[str, list[Any]]:
    """Per-run columns ``line_monotone`` and ``line_largest_bump`` for ``theta0, theta: (R, P)``."""
    _, monotone, bump = straight_line_profile(landscape, theta0, theta, points)
    return {"line_monotone": monotone.cpu().tolist(), "line_largest_bump": bump.cpu().tolist()}
