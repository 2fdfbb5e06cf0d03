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


def kink_example(x1: list[float], x2: list[float]) -> PiecewiseLinear:
    """N = 2 samples in d0 = 2, one hidden unit, noise eps = (1, 2), targets y = (1, -1), slope 0.1.

    At W_1 = 0 both pre-activations sit at the kink; with w_out = 1 the residual is r = (-1, 1) and
    dL/dW_1 = (1/2) sum_n r_n eps_n c_n x_n for slopes c_n in [0.1, 1]; dL/dw_out = 0 (sigma(0) = 0).
    """
    L = build(N=2, d0=2, widths=(1,), noise="none", slope=0.1)
    L.X = torch.tensor([x1, x2], dtype=torch.float64)
    L.y = torch.tensor([1.0, -1.0], dtype=torch.float64)
    L.eps = [torch.tensor([[1.0, 2.0]], dtype=torch.float64)]
    return L


AT_KINK = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)  # W_1 = (0, 0), w_out = 1


def test_generalized_gradient_at_a_kink_with_independent_samples():
    """x_1, x_2 orthogonal: the gradient is (1/2)(-c_1, 2 c_2), smallest at c = s: norm s sqrt(5) / 2."""
    L = kink_example([1.0, 0.0], [0.0, 1.0])
    norm, kinked, exact = L.kink_gradient_norm(AT_KINK, 1e-8)
    assert exact and int(kinked[0]) == 2
    assert float(norm[0]) == pytest.approx(0.1 * math.sqrt(5) / 2, rel=1e-9)
    # away from the kink nothing is free: the generalized gradient is the gradient
    off = torch.tensor([[0.3, -0.2, 1.0]], dtype=torch.float64)
    norm_off, kinked_off, _ = L.kink_gradient_norm(off, 1e-8)
    assert int(kinked_off[0]) == 0 and float(norm_off[0]) == pytest.approx(
        float(L.grad(off).norm()), rel=1e-12
    )


def test_generalized_gradient_can_vanish_where_the_gradient_does_not():
    """x_1 = x_2: the W_1 gradient is (1/2)(-c_1 + 2 c_2) x, zero at c_1 = 2 c_2 (e.g. 1 and 1/2), while
    the one-sided gradient (c = s) is s/2. The point is not a minimum (the loss falls for W_1 x < 0):
    the classifier calls it a non-differentiable critical point that the escape test escapes."""
    from study.diagnostics.critical import DiagnosticsConfig, classify

    L = kink_example([1.0, 0.0], [1.0, 0.0])
    assert float(L.grad(AT_KINK).norm()) == pytest.approx(0.05, rel=1e-12)
    norm, kinked, _ = L.kink_gradient_norm(AT_KINK, 1e-8)
    assert int(kinked[0]) == 2 and float(norm[0]) < 1e-10
    frame, _ = classify(L, AT_KINK, seeds=[0], config=DiagnosticsConfig(escape_radius=0.1))
    assert frame.loc[0, "critical_point"] == "not_converged"
    assert frame.loc[0, "kink_verdict"] == "nondifferentiable, escaped"
    # the orthogonal case is settled as not stationary (a descent direction exists)
    L2 = kink_example([1.0, 0.0], [0.0, 1.0])
    frame2, _ = classify(L2, AT_KINK, seeds=[0])
    assert frame2.loc[0, "kink_verdict"] == "at a kink, not stationary"


def test_chatter_at_kinks_stops_early_with_its_reason():
    """N = 24 = d0 d1 with d1 = 6: descent at step 0.1 bounces; stall detection stops it before the budget."""
    spec = RunSpec(
        "piecewise_linear",
        {"N": 24, "d0": 4, "widths": (6,), "slope": 0.1},
        train=TrainConfig(
            lr=0.1, tol=1e-8, max_steps=20000, stall_window=1000, stall_rtol=1e-6, stall_reductions=0
        ),
    )
    frame = run_replicas(spec, [1, 3]).frame
    assert frame["stop_reason"].tolist() == ["stalled", "stalled"]
    assert (frame["steps"] < 20000).all() and (frame["critical_point"] == "not_converged").all()
    assert set(frame["kink_verdict"]) <= {
        "nondifferentiable minimum",
        "nondifferentiable, escaped",
        "at a kink, not stationary",
        "undecided",
    }
