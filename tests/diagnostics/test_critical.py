"""The classifier on hand-built critical points with known answers, and the radius certificate."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from study.diagnostics.critical import DiagnosticsConfig, classify
from study.landscapes.base import Landscape
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig

torch.set_num_threads(1)


class Quadratic(Landscape):
    """f(x) = c + 1/2 sum_i a_i x_i^2 with declared optimum 0: a hand-built critical point at x = 0."""

    name = "quadratic"

    def __init__(self, curvatures, offset):
        self.a = torch.tensor(curvatures, dtype=torch.float64)
        self.c = offset
        self.n_params = len(curvatures)
        self.device, self.dtype = torch.device("cpu"), torch.float64

    def loss(self, theta):
        return self.c + 0.5 * (self.a * theta**2).sum(-1)

    def grad(self, theta):
        return self.a * theta

    @property
    def optimal_loss(self):
        return 0.0

    def init(self, seeds, *, scheme="xavier-normal", scale=1.0):
        return torch.zeros(len(seeds), self.n_params, dtype=torch.float64)


@pytest.mark.parametrize(
    "curvatures,offset,expected,index",
    [
        ([1.0, 2.0, 3.0], 0.0, "global_minimum", 0),
        ([1.0, 2.0, 3.0], 0.5, "spurious_minimum", 0),
        ([1.0, -2.0, 3.0], 0.5, "saddle", 1),
        ([-1.0, -2.0, 3.0], 0.5, "saddle", 2),
    ],
)
def test_hand_built_quadratics(curvatures, offset, expected, index):
    frame, _ = classify(Quadratic(curvatures, offset), torch.zeros(1, 3, dtype=torch.float64), seeds=[0])
    assert frame.loc[0, "critical_point"] == expected
    assert frame.loc[0, "n_negative"] == index


def test_not_converged_and_diverged():
    landscape = Quadratic([1.0, 1.0], 0.0)
    theta = torch.tensor([[1.0, 0.0], [math.nan, 0.0]], dtype=torch.float64)
    frame, _ = classify(landscape, theta, seeds=[0, 1])
    assert list(frame["critical_point"]) == ["not_converged", "diverged"]


class Quartic(Landscape):
    """f(x, y) = 1 + x^4 - y^4 + y^2 x^0 * 0: flat Hessian at 0, escapable along y (a degenerate saddle);
    f(x, y) = 1 + x^4 + y^4 is a degenerate minimum (not escapable)."""

    name = "quartic"

    def __init__(self, sign):
        self.sign = sign
        self.n_params = 2
        self.device, self.dtype = torch.device("cpu"), torch.float64

    def loss(self, theta):
        return 1.0 + theta[:, 0] ** 4 + self.sign * theta[:, 1] ** 4

    def grad(self, theta):
        return torch.stack([4 * theta[:, 0] ** 3, self.sign * 4 * theta[:, 1] ** 3], dim=-1)

    @property
    def optimal_loss(self):
        return 0.0

    def init(self, seeds, *, scheme="xavier-normal", scale=1.0):
        return torch.zeros(len(seeds), 2, dtype=torch.float64)


def test_degenerate_points_are_settled_by_the_escape_test():
    config = DiagnosticsConfig(escape_radius=0.3, escape_steps=200, escape_lr=0.1)
    saddle, _ = classify(Quartic(-1.0), torch.zeros(1, 2, dtype=torch.float64), seeds=[0], config=config)
    minimum, _ = classify(Quartic(1.0), torch.zeros(1, 2, dtype=torch.float64), seeds=[0], config=config)
    assert saddle.loc[0, "critical_point"] == "degenerate" and bool(saddle.loc[0, "escaped"])
    assert minimum.loc[0, "critical_point"] == "degenerate" and not bool(minimum.loc[0, "escaped"])


def symmetric_saddle():
    """n = k = 2, V = I: both students equal to c (1, 1) is critical by symmetry; c solves a 1-D equation."""
    landscape = TeacherStudent(TeacherStudentConfig(k=2, n=2))

    def radial(c):
        return float(landscape.grad(torch.full((1, 4), c, dtype=torch.float64))[0, 0])

    c = brentq(radial, 0.05, 3.0, xtol=1e-15)
    return landscape, torch.full((1, 4), c, dtype=torch.float64)


def test_teacher_student_symmetric_saddle_is_a_saddle():
    landscape, theta = symmetric_saddle()
    frame, spectrum = classify(landscape, theta, seeds=[0])
    assert frame.loc[0, "critical_point"] == "saddle"
    assert frame.loc[0, "n_negative"] == 1
    # the negative curvature is real: the loss drops quadratically along its eigenvector
    H = landscape.hessian(theta)[0]
    ev, vec = torch.linalg.eigh(H)
    step = 1e-3 * vec[:, 0].unsqueeze(0)
    drop = landscape.loss(theta + step) - landscape.loss(theta)
    assert float(drop) == pytest.approx(0.5 * float(ev[0]) * 1e-6, rel=1e-2)


def test_global_minimum_is_certified_with_zero_radius():
    landscape = TeacherStudent(TeacherStudentConfig(k=4, n=4))
    frame, _ = classify(landscape, torch.eye(4, dtype=torch.float64).reshape(1, -1), seeds=[0])
    assert frame.loc[0, "critical_point"] == "global_minimum"
    assert bool(frame.loc[0, "certified"]) and frame.loc[0, "radius"] == 0.0


def test_third_derivative_bound_dominates_finite_differences():
    """B must bound |D^3 F[u, u, u]| near the point; estimate it by differences of the exact Hessian."""
    landscape = TeacherStudent(TeacherStudentConfig(k=4, n=4))
    gen = torch.Generator().manual_seed(7)
    theta = landscape.init(list(range(5)))
    radius = torch.full((5,), 0.05, dtype=torch.float64)
    B = landscape.third_derivative_bound(theta, radius)
    worst = torch.zeros(5, dtype=torch.float64)
    for _ in range(40):
        u = torch.randn(theta.shape, generator=gen, dtype=torch.float64)
        u = u / u.norm(dim=-1, keepdim=True)
        eps = 1e-4
        dH = (landscape.hessian(theta + eps * u) - landscape.hessian(theta - eps * u)) / (2 * eps)
        third = torch.einsum("rp,rpq,rq->r", u, dH, u).abs()
        worst = torch.maximum(worst, third)
    assert bool((worst <= B).all()), (worst, B)


def test_spurious_minimum_found_by_training_is_certified():
    """k = n = 8, seed 0 ends at Safran & Shamir's spurious minimum with loss ~0.0215; certify it."""
    from study.runs import RunSpec, run_replicas

    batch = run_replicas(RunSpec("teacher_student", {"k": 8, "n": 8}), [0])
    row = batch.frame.iloc[0]
    assert row["critical_point"] == "spurious_minimum"
    assert row["loss"] == pytest.approx(0.0215, abs=5e-4)
    assert bool(row["certified"]) and 0 < row["radius"] < 1e-6
    assert row["lambda_min"] > 0
    assert np.isfinite(row["min_neuron_distance"])
