"""Straight-line basin probes (SCIENCE.md L4) on landscapes with known profiles."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from study.diagnostics.basin import basin_columns, straight_line_profile
from study.landscapes.base import Landscape, init_weight_matrices


class Bowl(Landscape):
    """L(theta) = 1/2 |theta|^2."""

    name = "bowl"
    n_params = 3
    device = torch.device("cpu")
    dtype = torch.float64

    def loss(self, theta: Tensor) -> Tensor:
        return 0.5 * theta.pow(2).sum(dim=-1)

    def grad(self, theta: Tensor) -> Tensor:
        return theta

    @property
    def optimal_loss(self) -> float:
        return 0.0

    def init(self, seeds: list[int], *, scheme: str = "xavier-normal", scale: float = 1.0) -> Tensor:
        return init_weight_matrices(
            seeds, [(1, 3)], scheme=scheme, scale=scale, dtype=self.dtype, device=self.device
        )


class DoubleWell(Bowl):
    """L(x) = (x^2 - 1)^2 on the first coordinate: minima at x = +-1 (L = 0), a barrier L = 1 at x = 0."""

    name = "double_well"
    n_params = 1

    def loss(self, theta: Tensor) -> Tensor:
        return (theta[:, 0] ** 2 - 1) ** 2

    def grad(self, theta: Tensor) -> Tensor:
        return 4 * theta * (theta**2 - 1)


def test_a_bowl_is_monotone_with_no_bump() -> None:
    bowl = Bowl()
    theta0 = bowl.init([0, 1, 2])
    losses, monotone, bump = straight_line_profile(bowl, theta0, torch.zeros_like(theta0), points=33)
    t = torch.linspace(0, 1, 33, dtype=torch.float64)
    expected = (1 - t).pow(2) * bowl.loss(theta0).unsqueeze(-1)  # (R, T): L((1 - t) theta0)
    assert torch.allclose(losses, expected, rtol=1e-13, atol=0)
    assert monotone.tolist() == [True] * 3
    assert bump.tolist() == [0.0] * 3


def test_a_double_well_path_has_the_known_bump() -> None:
    """x(t) = -1.5 + 2.5 t passes the minimum x = -1 (t = 0.2), the barrier x = 0 (t = 0.6) and ends at
    x = 1: the largest bump is L(0) - L(-1) = 1. Replica 2 stays in one well: monotone."""
    well = DoubleWell()
    theta0 = torch.tensor([[-1.5], [-1.5]], dtype=torch.float64)
    theta = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    losses, monotone, bump = straight_line_profile(well, theta0, theta, points=11)
    assert losses.shape == (2, 11)
    assert losses[0, 2].item() == pytest.approx(0.0, abs=1e-24)  # t = 0.2: the left minimum
    assert monotone.tolist() == [False, True]
    assert bump[0].item() == pytest.approx(1.0, abs=1e-12)
    assert bump[1].item() == 0.0
    # batched == one at a time
    for r in range(2):
        one = straight_line_profile(well, theta0[r : r + 1], theta[r : r + 1], points=11)
        assert torch.equal(one[0], losses[r : r + 1]) and torch.equal(one[2], bump[r : r + 1])


def test_non_finite_profiles_are_not_monotone() -> None:
    well = DoubleWell()
    theta0 = torch.tensor([[0.5]], dtype=torch.float64)
    _, monotone, bump = straight_line_profile(
        well, theta0, torch.tensor([[math.nan]], dtype=torch.float64), points=5
    )
    assert monotone.tolist() == [False] and math.isnan(bump.item())


def test_basin_columns() -> None:
    well = DoubleWell()
    theta0 = torch.tensor([[-1.5], [-1.5]], dtype=torch.float64)
    theta = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    cols = basin_columns(well, theta0, theta, points=11)
    assert cols["line_monotone"] == [False, True]
    assert cols["line_largest_bump"] == pytest.approx([1.0, 0.0], abs=1e-12)
