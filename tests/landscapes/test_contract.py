"""The contract every registered landscape satisfies, run over tiny configurations of each.

Adding a landscape = adding one entry to ``CONTRACT_CONFIGS`` (a test fails until every registered
landscape has one). Every landscape passes every check, classification included: training procedures
live apart (``study.procedures``), so a landscape is values and derivatives only.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from study.landscapes.base import INIT_SCHEMES, WIDE_SEEDS, Landscape
from study.landscapes.registry import LANDSCAPES, make_landscape

#: case id -> (registered name, tiny parameters)
CONTRACT_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "teacher_student": ("teacher_student", {"k": 3, "n": 4}),
    "deep_linear": ("deep_linear", {"widths": (3, 2, 3), "m": 8}),
    "deep_linear_deep_lowrank": ("deep_linear", {"widths": (3, 4, 2, 3), "m": 8, "x_rank": 2}),
    "deep_leaky": ("deep_leaky", {"widths": (3, 4, 2, 3), "m": 8, "slope": 0.2}),
    "deep_leaky_relu_lowrank": ("deep_leaky", {"widths": (3, 3, 3), "m": 8, "slope": 0.0, "x_rank": 2}),
    "piecewise_linear": ("piecewise_linear", {"N": 6, "d0": 3, "widths": (4,)}),
    "piecewise_linear_two_layer": (
        "piecewise_linear",
        {"N": 6, "d0": 3, "widths": (3, 2), "noise": "gaussian", "targets": "teacher"},
    ),
    "classification": ("classification", {"hidden": 4, "max_train": 20, "max_test": 10}),
}

SEEDS = [3, 4, 5]
STEP = 1e-6  # central differences in float64: error ~ STEP^2 |D^3| + eps |L| / STEP


@pytest.fixture(params=list(CONTRACT_CONFIGS), ids=list(CONTRACT_CONFIGS))
def case(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], Landscape]:
    name, params = CONTRACT_CONFIGS[request.param]
    return name, params, make_landscape(name, params)


@pytest.fixture
def landscape(case: tuple[str, dict[str, Any], Landscape]) -> Landscape:
    return case[2]


def smooth_point(landscape: Landscape) -> torch.Tensor:
    """Seeded points ``(R, P)``, checked to lie away from any kink the landscape reports."""
    theta = landscape.init(SEEDS)
    margin = landscape.run_diagnostics(theta).get("differentiability_margin")
    if margin is not None:
        assert min(margin) > 1e2 * STEP, "test point too close to a kink; pick other seeds"
    return theta


def test_every_registered_landscape_has_a_contract_config() -> None:
    assert set(LANDSCAPES) <= {name for name, _ in CONTRACT_CONFIGS.values()}


def test_values_are_finite_and_shaped(landscape: Landscape) -> None:
    theta = landscape.init(SEEDS)
    assert theta.shape == (len(SEEDS), landscape.n_params) and theta.dtype == torch.float64
    loss = landscape.loss(theta)
    assert loss.shape == (len(SEEDS),) and torch.isfinite(loss).all()
    stat = landscape.stationarity(theta)
    assert stat.shape == (len(SEEDS),) and (stat >= 0).all()


def test_gradient_matches_central_differences(landscape: Landscape) -> None:
    theta = smooth_point(landscape)
    grad = landscape.grad(theta)  # (R, P)
    eye = torch.eye(landscape.n_params, dtype=theta.dtype)
    fd = torch.stack(
        [(landscape.loss(theta + STEP * e) - landscape.loss(theta - STEP * e)) / (2 * STEP) for e in eye],
        dim=1,
    )  # (R, P)
    scale = float(grad.abs().max()) + 1.0
    assert float((grad - fd).abs().max()) < 1e-7 * scale


def test_hessian_matches_differences_of_the_gradient(landscape: Landscape) -> None:
    theta = smooth_point(landscape)
    H = landscape.hessian(theta)  # (R, P, P)
    eye = torch.eye(landscape.n_params, dtype=theta.dtype)
    fd = torch.stack(
        [(landscape.grad(theta + STEP * e) - landscape.grad(theta - STEP * e)) / (2 * STEP) for e in eye],
        dim=1,
    )  # (R, P, P): row j = d grad / d theta_j
    scale = float(H.abs().max()) + 1.0
    assert float((H - fd).abs().max()) < 1e-6 * scale
    assert float((H - H.transpose(-1, -2)).abs().max()) < 1e-12 * scale


def test_hvp_is_hessian_times_vector(landscape: Landscape) -> None:
    theta = smooth_point(landscape)
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(0), dtype=theta.dtype)
    expected = (landscape.hessian(theta) @ v.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(landscape.hvp(theta, v), expected, rtol=1e-10, atol=1e-12)


def test_hvp_matches_differences_of_the_gradient(landscape: Landscape) -> None:
    """H v against (grad(theta + h v) - grad(theta - h v)) / 2h: independent of the landscape's Hessian."""
    theta = smooth_point(landscape)
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(1), dtype=theta.dtype)
    v = v / v.norm(dim=-1, keepdim=True)
    h = 1e-5
    fd = (landscape.grad(theta + h * v) - landscape.grad(theta - h * v)) / (2 * h)
    hv = landscape.hvp(theta, v)
    scale = float(fd.abs().max()) + 1.0
    assert float((hv - fd).abs().max()) < 1e-6 * scale
    assert float(hv.norm()) > 0


def test_batched_equals_one_at_a_time(landscape: Landscape) -> None:
    theta = landscape.init(SEEDS)
    loss, grad = landscape.loss(theta), landscape.grad(theta)
    for r in range(len(SEEDS)):
        one = theta[r : r + 1]
        assert torch.allclose(landscape.loss(one), loss[r : r + 1], rtol=1e-13, atol=0)
        assert torch.allclose(landscape.grad(one), grad[r : r + 1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_init_depends_only_on_each_seed(landscape: Landscape, scheme: str) -> None:
    whole = landscape.init([11, 12, 13], scheme=scheme, scale=0.5)
    chunks = torch.cat(
        [landscape.init([11], scheme=scheme, scale=0.5), landscape.init([12, 13], scheme=scheme, scale=0.5)]
    )
    assert torch.allclose(whole, chunks, rtol=1e-14, atol=0)
    assert torch.equal(landscape.init([11, 12, 13], scheme=scheme, scale=0.5), whole)
    assert not torch.allclose(whole[0], whole[1])


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_wide_seeds_use_every_bit(landscape: Landscape, scheme: str) -> None:
    """Seeds from WIDE_SEEDS up (a hunt's SeedSequence seeds) differing only above bit 32 draw apart
    (torch's generator would see one seed), and still one replica per seed."""
    low = WIDE_SEEDS + 12345
    high = low + 2**40
    theta = landscape.init([low, high], scheme=scheme)
    assert not torch.equal(theta[0], theta[1])
    assert torch.allclose(landscape.init([high], scheme=scheme)[0], theta[1], rtol=1e-14, atol=0)


def test_parameter_count_is_known_from_the_config(case: tuple[str, dict[str, Any], Landscape]) -> None:
    _, _, landscape = case
    assert type(landscape).parameter_count(landscape.cfg) == landscape.n_params


def test_config_round_trips_through_the_registry(case: tuple[str, dict[str, Any], Landscape]) -> None:
    name, _, landscape = case
    config = dict(landscape.config())
    assert config.pop("landscape") == name
    rebuilt = make_landscape(name, config)
    theta = landscape.init(SEEDS)
    assert torch.equal(rebuilt.loss(theta), landscape.loss(theta))
    assert rebuilt.config() == landscape.config()
    assert rebuilt.optimal_loss == landscape.optimal_loss or (
        rebuilt.optimal_loss != rebuilt.optimal_loss and landscape.optimal_loss != landscape.optimal_loss
    )


def test_optimal_loss_is_a_lower_bound(landscape: Landscape) -> None:
    theta = landscape.init(SEEDS)
    l_star = landscape.optimal_loss
    if l_star == l_star:  # not NaN
        assert (landscape.loss(theta) >= l_star - 1e-12).all()
