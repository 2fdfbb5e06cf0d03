"""The deep leaky-ReLU landscape: slope 1 is the deep linear network exactly; below 1 the hypotheses say
outside the theorem, L* is unknown, the symmetry is per-unit rescaling, and kinks are settled."""

from __future__ import annotations

import math

import pytest
import torch

from study.diagnostics.critical import DiagnosticsConfig, classify, relabel_unknown_optimum
from study.landscapes.registry import landscape_config, make_landscape

DATA = {"widths": (3, 4, 2, 3), "m": 10, "targets": "linear"}


def test_slope_one_is_the_deep_linear_network() -> None:
    leaky = make_landscape("deep_leaky", {**DATA, "slope": 1.0})
    linear = make_landscape("deep_linear", DATA)
    theta = linear.init([1, 2, 3])
    assert torch.equal(leaky.init([1, 2, 3]), theta)
    assert torch.allclose(leaky.loss(theta), linear.loss(theta), rtol=1e-14, atol=0)
    assert torch.allclose(leaky.grad(theta), linear.grad(theta), rtol=1e-13, atol=1e-15)
    assert leaky.optimal_loss == linear.optimal_loss
    assert torch.equal(leaky.expected_zero_eigenvalues(theta), linear.expected_zero_eigenvalues(theta))
    flags = leaky.hypotheses()
    assert flags["inside_theorem"] and flags["linear_activation"]
    assert leaky.run_diagnostics(theta)["differentiability_margin"] == [math.inf] * 3
    assert leaky.kink_gradient_norm(theta, 1e-4) is None


def test_below_slope_one_the_theorem_does_not_apply() -> None:
    leaky = make_landscape("deep_leaky", {**DATA, "slope": 0.3})
    assert math.isnan(leaky.optimal_loss)
    flags = leaky.hypotheses()
    assert flags["x_full_row_rank"] and flags["y_full_row_rank"]
    assert not flags["linear_activation"] and not flags["inside_theorem"]
    low_rank = make_landscape("deep_leaky", {**DATA, "slope": 1.0, "x_rank": 2})
    assert not low_rank.hypotheses()["inside_theorem"]
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="slope"):
            landscape_config("deep_leaky", {**DATA, "slope": bad})


def test_rescaling_a_hidden_unit_is_the_only_continuous_symmetry() -> None:
    leaky = make_landscape("deep_leaky", {**DATA, "slope": 0.2})
    theta = leaky.init([5])
    W1, W2, W3 = (W.clone() for W in leaky.layers(theta))
    W1[0, 1] *= 3.0  # unit 1 of the first hidden layer: incoming row x 3, outgoing column / 3
    W2[0, :, 1] /= 3.0
    moved = torch.cat([W.reshape(1, -1) for W in (W1, W2, W3)], dim=1)
    assert float(leaky.loss(moved)) == pytest.approx(float(leaky.loss(theta)), rel=1e-13)
    assert int(leaky.expected_zero_eigenvalues(theta)[0]) == 4 + 2  # one per hidden unit
    grad = leaky.grad(theta)  # the loss is flat along each rescaling tangent
    tangents = leaky.symmetry_tangents(theta)  # (1, 6, P)
    assert float((tangents @ grad.unsqueeze(-1)).abs().max()) < 1e-12


def test_a_kink_is_found_and_its_generalized_gradient_is_no_larger() -> None:
    leaky = make_landscape("deep_leaky", {"widths": (3, 4, 2), "m": 10, "slope": 0.25})
    theta = leaky.init([7])
    W1 = leaky.layers(theta)[0]
    x0 = leaky.X[:, 0]
    W1[0, 2] -= (W1[0, 2] @ x0) / (x0 @ x0) * x0  # unit 2 sits exactly at its kink on sample 0
    norm, kinked, exact = leaky.kink_gradient_norm(theta, 1e-9)
    assert int(kinked[0]) == 1 and exact  # one hidden layer: the minimum over slopes is exact
    assert float(norm[0]) <= float(leaky.grad(theta).norm()) + 1e-12


def test_unknown_optimum_is_labelled_against_the_best_run() -> None:
    leaky = make_landscape("deep_leaky", {"widths": (2, 3, 2), "m": 6, "slope": 0.0})
    from study.training.gd import TrainConfig, train

    seeds = [0, 1, 2, 3]
    result = train(
        leaky, leaky.init(seeds), TrainConfig(lr=0.05, tol=1e-9, max_steps=20000, newton_polish=True)
    )
    frame, _ = classify(leaky, result.theta, seeds=seeds, config=DiagnosticsConfig(gap_tol=1e-6))
    assert (frame["l_star_source"] == "best of batch").all()
    assert not frame["hyp_inside_theorem"].any()
    labelled = relabel_unknown_optimum(frame.assign(param_slope=0.0), gap_tol=1e-6)
    minima = labelled["critical_point"].isin(["global_minimum", "spurious_minimum"])
    best = labelled.loc[minima, "loss"].min()
    assert (labelled.loc[labelled["critical_point"] == "global_minimum", "loss"] <= best + 1e-6).all()
