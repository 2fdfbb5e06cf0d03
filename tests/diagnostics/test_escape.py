"""The escape test on hand-built degenerate critical points at the origin (zero Hessian there).

Known answers: 1 + x^4 - y^4 is a saddle unbounded below (descent along y runs off to -inf);
1 + x^4 - y^4 + y^6 is a saddle bounded below (descent settles at y^2 = 2/3, loss 1 - 4/27);
1 + x^4 + y^4 is a (degenerate) minimum. Every seed and radius must give the same verdict.
"""

import math

import pytest
import torch

from study.diagnostics.critical import DiagnosticsConfig, classify, escape_test
from study.landscapes.base import Landscape

torch.set_num_threads(1)

SEEDS = list(range(24))
RADII = (0.05, 0.3, 1.0, 3.0)


class Polynomial(Landscape):
    """f(x, y) = 1 + x^4 + a y^4 + b y^6: a degenerate critical point at the origin."""

    name = "polynomial"

    def __init__(self, a: float, b: float) -> None:
        super().__init__(None)
        self.a, self.b = a, b
        self.n_params = 2

    def loss(self, theta):
        x, y = theta[:, 0], theta[:, 1]
        return 1.0 + x**4 + self.a * y**4 + self.b * y**6

    def grad(self, theta):
        x, y = theta[:, 0], theta[:, 1]
        return torch.stack([4 * x**3, 4 * self.a * y**3 + 6 * self.b * y**5], dim=-1)

    @property
    def optimal_loss(self):
        return 0.0

    def init(self, seeds, *, scheme="xavier-normal", scale=1.0):
        return torch.zeros(len(seeds), 2, dtype=torch.float64)


def verdicts(landscape: Landscape, radius: float) -> torch.Tensor:
    config = DiagnosticsConfig(escape_radius=radius, escape_steps=2000, escape_lr=0.05)
    origin = torch.zeros(len(SEEDS), 2, dtype=torch.float64)
    return escape_test(landscape, origin, SEEDS, config)


@pytest.mark.parametrize("radius", RADII)
def test_saddle_unbounded_below_escapes_for_every_seed_and_radius(radius):
    landscape = Polynomial(-1.0, 0.0)
    assert bool(verdicts(landscape, radius).all())


def test_unbounded_descent_really_runs_off():
    """The case the verdict must survive: from radius 3 the iterate overflows (loss -inf, then NaN)."""
    landscape = Polynomial(-1.0, 0.0)
    x = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    with torch.no_grad():
        for _ in range(40):
            x = x - 0.05 * landscape.grad(x)
    assert not torch.isfinite(landscape.loss(x)).all()


@pytest.mark.parametrize("radius", RADII)
def test_saddle_bounded_below_escapes_for_every_seed_and_radius(radius):
    landscape = Polynomial(-1.0, 1.0)
    assert bool(verdicts(landscape, radius).all())


@pytest.mark.parametrize("radius", RADII[:3])
def test_degenerate_minimum_is_never_escaped(radius):
    landscape = Polynomial(1.0, 0.0)
    assert not bool(verdicts(landscape, radius).any())


def test_classifier_settles_both_saddles_and_the_minimum():
    config = DiagnosticsConfig(escape_radius=0.3, escape_steps=500, escape_lr=0.05)
    origin = torch.zeros(1, 2, dtype=torch.float64)
    for (a, b), escaped in (((-1.0, 0.0), True), ((-1.0, 1.0), True), ((1.0, 0.0), False)):
        frame, _ = classify(Polynomial(a, b), origin, seeds=[0], config=config)
        assert frame.loc[0, "critical_point"] == "degenerate"
        assert frame.loc[0, "second_order"] == "degenerate"
        assert bool(frame.loc[0, "escaped"]) is escaped
        assert math.isclose(frame.loc[0, "loss"], 1.0)
