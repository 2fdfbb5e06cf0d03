"""Known answers for the piecewise-linear network with dropout-like noise (SCIENCE.md L2)."""

from __future__ import annotations

import math

import pytest
import torch

from study.landscapes.piecewise_linear import PiecewiseLinear, PiecewiseLinearConfig
from study.landscapes.registry import make_landscape
from study.runs import RunSpec, run_replicas
from study.training.gd import TrainConfig


def build(**params: object) -> PiecewiseLinear:
    L = make_landscape("piecewise_linear", {"N": 6, "d0": 3, "widths": (4,), **params})
    assert isinstance(L, PiecewiseLinear)
    return L


def brute_force(L: PiecewiseLinear, theta: torch.Tensor) -> tuple[list[float], list[float], list[int]]:
    """Loss, differentiability margin and dead units of one replica, sample by sample, unit by unit."""
    Ws = L.layers(theta)
    losses, margins, dead = [], [], []
    for r in range(theta.shape[0]):
        total, margin, negative = 0.0, math.inf, [[True] * w for w in L.cfg.widths]
        for n in range(L.cfg.N):
            a = L.X[n]
            for layer, W in enumerate(Ws[:-1]):
                z = W[r] @ a
                for i in range(z.shape[0]):
                    if float(L.eps[layer][i, n]) != 0.0:
                        margin = min(margin, abs(float(z[i])))
                    negative[layer][i] &= float(z[i]) < 0
                a = L.eps[layer][:, n] * torch.where(z > 0, z, L.cfg.slope * z)
            total += 0.5 * float(Ws[-1][r] @ a - L.y[n]) ** 2 / L.cfg.N
        losses.append(total)
        margins.append(margin)
        dead.append(sum(sum(row) for row in negative))
    return losses, margins, dead


def test_config_accepts_lists_and_rejects_bad_fields() -> None:
    cfg = PiecewiseLinearConfig(N=4, d0=2, widths=[3, 2])  # type: ignore[arg-type]
    assert cfg.widths == (3, 2) and cfg.shapes == [(3, 2), (2, 3), (1, 2)]
    with pytest.raises(ValueError, match="widths"):
        PiecewiseLinearConfig(N=4, d0=2, widths=(3, 2, 2))
    with pytest.raises(ValueError, match="noise"):
        PiecewiseLinearConfig(N=4, d0=2, widths=(3,), noise="uniform")


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"N": 3},  # few samples: some units are negative on all of them (dead)
        {"widths": (4, 3), "noise": "gaussian"},
        {"noise": "none", "slope": 0.0},
        {"noise_level": 0.5},
    ],
)
def test_loss_and_diagnostics_match_a_sample_by_sample_computation(params: dict) -> None:
    L = build(**params)
    theta = L.init([0, 1, 2, 3, 4, 5])
    losses, margins, dead = brute_force(L, theta)
    assert L.loss(theta).tolist() == pytest.approx(losses, rel=1e-12)
    diag = L.run_diagnostics(theta)
    assert diag["differentiability_margin"] == pytest.approx(margins, rel=1e-12)
    assert diag["dead_units"] == dead
    assert diag["training_error"] == [1.0] * 6  # random init fits no sample


def test_noise_distributions() -> None:
    assert all(bool((e == 1).all()) for e in build(noise="none").eps)
    drop = build(N=2000, noise="bernoulli", noise_level=0.25).eps[0]
    assert set(drop.unique().tolist()) == {0.0, 1.0 / 0.75}  # inverted dropout
    assert float((drop == 0).double().mean()) == pytest.approx(0.25, abs=0.02)
    gauss = build(N=2000, noise="gaussian", noise_level=0.3).eps[0]
    assert float(gauss.mean()) == pytest.approx(1.0, abs=0.02)
    assert float(gauss.std()) == pytest.approx(0.3, abs=0.02)


def test_rescaling_a_hidden_unit_leaves_the_loss_unchanged() -> None:
    L = build(widths=(4, 3))
    theta = L.init([7])
    W1, W2, w3 = (W.clone() for W in L.layers(theta))
    W2[:, 1, :] *= 3.0  # unit 1 of layer 2: incoming row * 3, outgoing column / 3
    w3[:, :, 1] /= 3.0
    scaled = torch.cat([W1.flatten(1), W2.flatten(1), w3.flatten(1)], dim=1)
    assert float(L.loss(scaled)) == pytest.approx(float(L.loss(theta)), rel=1e-13)
    assert L.expected_zero_eigenvalues(theta).tolist() == [4 + 3]
    assert L.expected_zero_eigenvalues(torch.zeros_like(theta)).tolist() == [0]


def test_optimal_loss_and_hypotheses() -> None:
    assert build(N=12).hypotheses()["n_le_d0_d1"] and build(N=12).optimal_loss == 0.0
    assert not build(N=13).hypotheses()["n_le_d0_d1"] and math.isnan(build(N=13).optimal_loss)
    assert build(N=13, reference_loss=0.25).optimal_loss == 0.25
    # deeper nets: the last two hidden widths count, not d0 d1
    assert not build(N=7, d0=100, widths=(2, 3)).hypotheses()["n_le_d0_d1"]
    assert build(N=6, d0=100, widths=(2, 3)).hypotheses()["n_le_d0_d1"]
    assert not build(noise="none").hypotheses()["dropout_noise"]


def test_teacher_targets_are_realizable() -> None:
    L = build(N=40, targets="teacher")
    assert L.teacher_theta is not None
    assert float(L.loss(L.teacher_theta)) < 1e-28
    assert L.optimal_loss == 0.0  # realizable even though N > d0 d1
    assert L.run_diagnostics(L.teacher_theta)["training_error"] == [0.0]


def test_over_parameterized_runs_reach_zero_training_error() -> None:
    """N = 8 <= d0 d1 = 24: no run may end at a spurious minimum; those that converge fit every sample."""
    spec = RunSpec(
        "piecewise_linear",
        {"N": 8, "d0": 4, "widths": (6,)},
        train=TrainConfig(lr=0.1, tol=1e-8, max_steps=5000),
    )
    frame = run_replicas(spec, list(range(8))).frame
    assert "spurious_minimum" not in set(frame.critical_point)
    fitted = frame[frame.critical_point == "global_minimum"]
    assert len(fitted) >= 6
    assert (fitted.training_error == 0.0).all() and (fitted.loss < 1e-12).all()
    assert frame.hyp_n_le_d0_d1.all()
