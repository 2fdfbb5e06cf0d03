"""Known answers for the deep linear landscape (SCIENCE.md L3)."""

from __future__ import annotations

import pytest
import torch

from study.diagnostics.critical import classify
from study.landscapes.deep_linear import DeepLinear, DeepLinearConfig
from study.landscapes.registry import make_landscape
from study.runs import RunSpec, run_replicas
from study.training.gd import TrainConfig


def rank_constrained_als(X: torch.Tensor, Y: torch.Tensor, rank: int, iters: int = 3000) -> float:
    """min_{rank(W) <= rank} 1/2 |W X - Y|^2 by alternating least squares on W = A B (no SVD of Yhat)."""
    gen = torch.Generator().manual_seed(123)
    B = torch.randn(rank, X.shape[0], generator=gen, dtype=torch.float64)
    for _ in range(iters):
        A = Y @ torch.linalg.pinv(B @ X)  # argmin_A |A (B X) - Y|
        B = torch.linalg.pinv(A) @ Y @ torch.linalg.pinv(X)  # argmin_B |A B X - Y|
    return 0.5 * float((A @ B @ X - Y).pow(2).sum())


def test_config_accepts_lists_and_rejects_bad_fields() -> None:
    assert DeepLinearConfig(widths=[3, 2, 3]).widths == (3, 2, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="widths"):
        DeepLinearConfig(widths=(3,))
    with pytest.raises(ValueError, match="x_rank"):
        DeepLinearConfig(widths=(3, 3), m=10, x_rank=4)


@pytest.mark.parametrize(
    "params",
    [
        {"widths": (3, 2, 3), "m": 10},  # bottleneck r = 2 < rank Yhat = 3
        {"widths": (4, 3, 2, 4), "m": 12, "x_rank": 3},  # rank-deficient X (pinv), r = 2
        {"widths": (3, 4, 1, 3), "m": 10, "y_rank": 2},  # rank-deficient Y, r = 1
        {"widths": (3, 2, 3), "m": 10, "targets": "linear"},  # Y = T X: only the bottleneck costs
    ],
)
def test_optimal_loss_matches_alternating_least_squares(params: dict) -> None:
    L = make_landscape("deep_linear", params)
    assert isinstance(L, DeepLinear)
    reference = rank_constrained_als(L.X, L.Y, min(params["widths"]))
    assert L.optimal_loss == pytest.approx(reference, rel=1e-9, abs=1e-12)


def test_optimal_loss_without_bottleneck_is_least_squares_residual() -> None:
    L = make_landscape("deep_linear", {"widths": (3, 4, 3), "m": 10})
    assert isinstance(L, DeepLinear)
    W = torch.linalg.lstsq(L.X.T, L.Y.T).solution.T  # (dH, d0): argmin |W X - Y|
    assert L.optimal_loss == pytest.approx(0.5 * float((W @ L.X - L.Y).pow(2).sum()), rel=1e-12)


def test_linear_targets_without_bottleneck_are_fitted_exactly() -> None:
    L = make_landscape("deep_linear", {"widths": (3, 4, 3), "m": 10, "targets": "linear"})
    assert abs(L.optimal_loss) < 1e-28


def test_hypotheses_follow_the_data_rank() -> None:
    assert make_landscape("deep_linear", {"widths": (3, 3), "m": 10}).hypotheses() == {
        "x_full_row_rank": True,
        "y_full_row_rank": True,
        "inside_theorem": True,
    }
    flags = make_landscape("deep_linear", {"widths": (3, 3), "m": 10, "x_rank": 2}).hypotheses()
    assert flags == {"x_full_row_rank": False, "y_full_row_rank": True, "inside_theorem": False}
    assert not make_landscape("deep_linear", {"widths": (5, 3), "m": 4}).hypotheses()["x_full_row_rank"]


@pytest.mark.parametrize(
    ("params", "generic", "at_origin"),
    [
        ({"widths": (3, 2, 3)}, 4, 0),  # GL(2)
        ({"widths": (3, 3, 3, 3)}, 18, 0),  # GL(3) x GL(3)
        ({"widths": (2, 5, 2)}, 25 - 9, 0),  # stabilizer: B W1 = 0 and W2 B = 0, (5-2)(5-2) dims
        ({"widths": (3, 3, 3), "x_rank": 2}, 9 + 3, 3),  # + translations of W1 along null(X^T)
        ({"widths": (3, 2)}, 0, 0),  # depth 1: no internal layer
    ],
)
def test_expected_zero_eigenvalues(params: dict, generic: int, at_origin: int) -> None:
    L = make_landscape("deep_linear", {"m": 10, **params})
    theta = L.init([0, 1, 2])
    assert L.expected_zero_eigenvalues(theta).tolist() == [generic] * 3
    assert L.expected_zero_eigenvalues(torch.zeros_like(theta)).tolist() == [at_origin] * 3


def test_origin_of_a_deep_net_is_degenerate_and_escapes() -> None:
    L = make_landscape("deep_linear", {"widths": (3, 3, 3, 3), "m": 10})
    origin = torch.zeros(1, L.n_params, dtype=torch.float64)
    frame, spectrum = classify(L, origin, seeds=[0])
    assert float(spectrum.lambda_min[0]) == 0.0 and float(spectrum.lambda_max[0]) == 0.0  # no curvature
    assert frame.critical_point.tolist() == ["degenerate"]
    assert frame.escaped.tolist() == [True]


def test_hand_built_strict_saddle_of_a_depth_two_net() -> None:
    """With M = Y X^T (X X^T)^{-1/2} = U S V^T, W2 = u_2, W1 = u_2^T M (X X^T)^{-1/2} is a critical point
    keeping the second singular direction only (Baldi & Hornik); its gap is (s_1^2 - s_2^2) / 2."""
    L = make_landscape("deep_linear", {"widths": (3, 1, 3), "m": 10})
    assert isinstance(L, DeepLinear)
    evals, evecs = torch.linalg.eigh(L.X @ L.X.T)
    inv_sqrt = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    M = L.Y @ L.X.T @ inv_sqrt
    U, S, _ = torch.linalg.svd(M)
    W2 = U[:, 1:2]  # (3, 1)
    W1 = W2.T @ M @ inv_sqrt  # (1, 3)
    theta = torch.cat([W1.reshape(-1), W2.reshape(-1)]).unsqueeze(0)
    assert float(L.grad(theta).abs().max()) < 1e-12
    frame, _ = classify(L, theta, seeds=[0])
    assert frame.critical_point.tolist() == ["saddle"]
    assert frame.n_negative[0] >= 1
    assert frame.loss_gap[0] == pytest.approx(0.5 * float(S[0] ** 2 - S[1] ** 2), rel=1e-10)


@pytest.mark.parametrize("widths", [(3, 2, 3), (3, 3, 3, 3)])
def test_trained_runs_reach_the_global_minimum(widths: tuple[int, ...]) -> None:
    spec = RunSpec(
        "deep_linear", {"widths": widths, "m": 10}, train=TrainConfig(lr=0.05, tol=1e-9, max_steps=20_000)
    )
    frame = run_replicas(spec, [0, 1, 2, 3]).frame
    assert frame.critical_point.tolist() == ["global_minimum"] * 4
    assert (frame.loss_gap.abs() < 1e-12).all()
    # every zero Hessian eigenvalue at these minima is explained by the rescaling symmetry
    assert (frame.n_zero == frame.expected_zero).all()
    assert frame.hyp_x_full_row_rank.all() and frame.hyp_y_full_row_rank.all()
