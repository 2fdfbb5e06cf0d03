"""One `train`, two engines: the compiled per-replica loop and the batched torch loop follow the same
protocol step for step (same steps, restarts, stop reasons and classes, end points within 1e-12, the
same loss-curve samples), with restarts forced, budgets, stalls and the Newton finish.

Why the full-size contract (``-m slow``) is what it is. The two engines compute the same gradient in
different summation orders, so their iterates differ in the last bits (about 1e-14). Plain descent
carries that without harm, at every n. A decision taken on a threshold (stop at ``tol``, switch to
Newton at ``newton_polish_at``) can go the other way when the stationarity lands within rounding of it:
then the engines are one step apart. At n = k the global minima are isolated, the Newton finish lands on
the same point, and everything else agrees (end points to 1e-10). At n > k the global minima form
manifolds: the Newton finish meets nearly singular Hessians, and last-bit differences decide whether a
finish is accepted, how many Newton steps it takes and where on the manifold it lands (end points up to
0.4 apart, a refused finish costs ~28,000 more descent steps; measured 2026-12-04 on 64 seeds for k in
{6, 8, 13}: no n = k run differed; at n > k up to all 64 end points differed and up to 4 runs of 64
reached the cap in one engine only; near split students the Hessian's smallest eigenvalue crosses the
guard's -1e-6 |H| either way). What the hunts read still agrees there, and that is the contract: runs both
engines finish inside the cap have the same class and loss (to the diagnostics' ``gap_tol``); the cap
is reached as often in both (the runs at the cap in one engine only: an exact McNemar test, p >= 0.01,
and at most 10% of a case); the step counts come from the same distribution (two-sample
Kolmogorov-Smirnov, p >= 0.01). The 2% bound first asked for one-sided cap runs does not hold at
k = 13, n = 15 (4 of 64 runs, measured 2026-12-04; 5 of the 384 runs at n > k): a refused finish costs
~28,000 descent steps, so a second refusal, decided by last bits, lands past the 50,000-step cap.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from study.diagnostics.critical import DiagnosticsConfig, classify
from study.landscapes.deep_linear import DeepLinear, DeepLinearConfig
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.landscapes.teacher_student.kernel import acos, gradient
from study.training.compiled import train_compiled, warm_up
from study.training.gd import TrainConfig, TrainResult, train, uses_compiled

torch.set_num_threads(1)


def _engines(landscape, theta0, config, budget=None) -> tuple[TrainResult, TrainResult]:
    compiled = train(landscape, theta0, replace(config, engine="compiled"), budget=budget)
    batched = train(landscape, theta0, replace(config, engine="torch"), budget=budget)
    return compiled, batched


def assert_same_runs(landscape, a: TrainResult, b: TrainResult, *, classes: bool = True) -> None:
    assert a.stop_reason == b.stop_reason
    assert torch.equal(a.total_steps, b.total_steps) and torch.equal(a.steps, b.steps)
    assert torch.equal(a.restarts, b.restarts) and torch.equal(a.newton_steps, b.newton_steps)
    assert torch.equal(a.converged, b.converged) and torch.equal(a.diverged, b.diverged)
    assert torch.equal(a.lr, b.lr)
    np.testing.assert_allclose(a.theta.numpy(), b.theta.numpy(), rtol=0, atol=1e-12)
    assert torch.equal(a.curve_steps, b.curve_steps)
    assert torch.equal(a.curve.isnan(), b.curve.isnan())
    np.testing.assert_allclose(a.curve.numpy(), b.curve.numpy(), rtol=1e-12, atol=1e-12, equal_nan=True)
    if classes:
        assert list(_classes(landscape, a)["critical_point"]) == list(
            _classes(landscape, b)["critical_point"]
        )


def test_branch_free_arccos_is_within_one_ulp():
    from numba import njit

    @njit
    def many(x, out):
        for i in range(x.shape[0]):
            out[i] = acos(x[i])

    x = np.concatenate(
        [np.linspace(-1, 1, 200_001), 1 - np.logspace(-17, 0, 2000), -1 + np.logspace(-17, 0, 2000)]
    )
    out = np.empty_like(x)
    many(x, out)
    reference = np.arccos(x)
    assert np.all(np.abs(out - reference) <= np.spacing(np.maximum(reference, 1e-300)))


@pytest.mark.parametrize("teacher", ["identity", "gaussian", "non_orthogonal"])
def test_kernel_gradient_equals_the_torch_gradient(teacher):
    for k, n in [(3, 3), (6, 8), (9, 9)]:
        landscape = TeacherStudent(TeacherStudentConfig(k=k, n=n, teacher=teacher))
        theta = landscape.init([0, 1, 2])
        torch_grad = landscape.grad(theta).numpy().reshape(3, n, k)
        V = landscape.V.numpy().copy()
        for r in range(3):
            W = theta[r].numpy().reshape(n, k).copy()
            np.testing.assert_allclose(
                gradient(W, V, teacher == "identity"), torch_grad[r], rtol=0, atol=1e-14
            )


@pytest.mark.parametrize("k, n", [(6, 6), (6, 7)])
def test_engines_agree_on_the_published_protocol(k, n):
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=n))
    theta0 = landscape.init(list(range(12)))
    compiled, batched = _engines(landscape, theta0, TrainConfig(max_steps=20_000))
    assert_same_runs(landscape, compiled, batched)


def test_engines_agree_with_restarts_budgets_and_newton():
    landscape = TeacherStudent(TeacherStudentConfig(k=5, n=5))
    theta0 = landscape.init(list(range(12)))
    forced = TrainConfig(lr=6.0, max_restarts=4, max_steps=5_000)  # several restarts, some diverge
    compiled, batched = _engines(landscape, theta0, forced)
    assert int(batched.restarts.sum()) > 0
    assert_same_runs(landscape, compiled, batched, classes=False)
    budget = torch.arange(12) * 37
    compiled, batched = _engines(landscape, theta0, TrainConfig(), budget=budget)
    assert "max_steps" in batched.stop_reason
    assert_same_runs(landscape, compiled, batched, classes=False)
    newton = TrainConfig(newton_polish=True, newton_polish_at=1e-2, max_steps=20_000)
    compiled, batched = _engines(landscape, theta0, newton)
    assert int(batched.newton_steps.sum()) > 0
    assert_same_runs(landscape, compiled, batched)


def test_engines_agree_on_stalls_and_a_general_teacher():
    landscape = TeacherStudent(TeacherStudentConfig(k=4, n=5, teacher="gaussian", teacher_seed=3))
    theta0 = landscape.init(list(range(8)))
    stall = TrainConfig(max_steps=3_000, stall_window=40, stall_rtol=0.05, stall_reductions=1)
    compiled, batched = _engines(landscape, theta0, stall)
    assert "stalled" in batched.stop_reason
    assert_same_runs(landscape, compiled, batched, classes=False)


def test_compiled_end_points_do_not_depend_on_chunk_or_threads():
    landscape = TeacherStudent(TeacherStudentConfig(k=6, n=6))
    theta0 = landscape.init(list(range(8)))
    config = TrainConfig(max_steps=5_000, engine="compiled")
    whole = train_compiled(landscape, theta0, config, threads=2)
    alone = train_compiled(landscape, theta0[5:6], config, threads=1)
    assert torch.equal(whole.theta[5], alone.theta[0]) and int(whole.total_steps[5]) == int(
        alone.total_steps[0]
    )
    one_thread = train_compiled(landscape, theta0, config, threads=1)
    assert torch.equal(whole.theta, one_thread.theta)


def test_engine_choice():
    ts = TeacherStudent(TeacherStudentConfig(k=3, n=3))
    theta0 = ts.init([0])
    assert uses_compiled(ts, theta0, TrainConfig())  # auto: compiled on CPU in float64
    assert not uses_compiled(ts, theta0, TrainConfig(engine="torch"))
    assert not uses_compiled(ts, theta0.float(), TrainConfig())  # float32 runs the torch engine
    linear = DeepLinear(DeepLinearConfig(widths=(2, 2, 2)))
    assert not uses_compiled(linear, linear.init([0]), TrainConfig())  # no kernel: torch
    with pytest.raises(ValueError, match="engine 'compiled'"):
        uses_compiled(linear, linear.init([0]), TrainConfig(engine="compiled"))
    with pytest.raises(ValueError, match="engine must be one of"):
        TrainConfig(engine="fast")
    assert warm_up(ts) >= 0.0


CAP_ONE_SIDED = 0.10  # most runs (share of a case) allowed at the step cap in one engine only
THRESHOLD_RTOL = 1e-12  # a stationarity this close (relative) to a threshold may be decided either way
P_MIN = 0.01  # the two-sample tests below: KS on the step counts, McNemar on the runs at the cap


def stationarity_path(landscape, start: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """The stationarity along plain descent ``x <- x - lr grad(x)`` from ``start: (P,)``, steps 0..steps.

    A refused Newton finish resumes descent where it switched, so this path holds every decision."""
    x = start.unsqueeze(0).clone()  # (1, P)
    out = torch.empty(steps + 1, dtype=torch.float64)
    for t in range(steps + 1):
        g = landscape.grad(x)
        out[t] = landscape.stationarity_from_grad(x, g)[0]
        x = x - lr * g
    return out


def decided_at_a_threshold(landscape, start: torch.Tensor, config: TrainConfig, steps: int) -> bool:
    """Whether some stationarity on the descent path lies within THRESHOLD_RTOL of ``tol`` or of a
    Newton switch point (``newton_polish_at``, then 100 times lower after each refusal)."""
    path = stationarity_path(landscape, start, config.lr, steps)
    thresholds = [config.tol]
    switch = config.newton_polish_at
    while config.newton_polish and switch > config.tol:
        thresholds.append(switch)
        switch /= 100
    return any(bool(((path / t - 1).abs() <= THRESHOLD_RTOL).any()) for t in thresholds)


def assert_same_runs_at_isolated_minima(landscape, theta0, config, a: TrainResult, b: TrainResult) -> None:
    """n = k: the same classes, stop reasons and end points (1e-10); the same steps, except one step
    apart where a stationarity that decided a switch or stop lies within THRESHOLD_RTOL of it."""
    assert a.stop_reason == b.stop_reason
    assert torch.equal(a.converged, b.converged) and torch.equal(a.restarts, b.restarts)
    np.testing.assert_allclose(a.theta.numpy(), b.theta.numpy(), rtol=0, atol=1e-10)
    apart = (a.total_steps != b.total_steps).nonzero().flatten().tolist()
    for r in apart:
        assert abs(int(a.total_steps[r]) - int(b.total_steps[r])) == 1 and int(a.restarts[r]) == 0, r
        steps = int(max(a.total_steps[r], b.total_steps[r]))
        assert decided_at_a_threshold(landscape, theta0[r], config, steps), f"seed {r}: one step apart"
    same = torch.ones(a.theta.shape[0], dtype=torch.bool)
    same[apart] = False
    assert torch.equal(a.newton_steps[same], b.newton_steps[same]) and torch.equal(
        a.steps[same], b.steps[same]
    )
    # a loss sample mid-descent may differ by ~1e-12 (k = 6 seed 54: 1.7e-12 on 0.0058), as end points may
    np.testing.assert_allclose(
        a.curve[same].numpy(), b.curve[same].numpy(), rtol=1e-10, atol=1e-10, equal_nan=True
    )
    frame_a, frame_b = _classes(landscape, a), _classes(landscape, b)
    assert list(frame_a["critical_point"]) == list(frame_b["critical_point"])


def assert_same_statistics(landscape, a: TrainResult, b: TrainResult) -> None:
    """n > k: classes and losses agree where both engines finished inside the cap; few runs reach the
    cap in one engine only, as often in each; the step counts pass a two-sample Kolmogorov-Smirnov test."""
    from scipy.stats import binomtest, ks_2samp

    capped_a = torch.tensor([reason == "max_steps" for reason in a.stop_reason])
    capped_b = torch.tensor([reason == "max_steps" for reason in b.stop_reason])
    R = a.theta.shape[0]
    only_a, only_b = int((capped_a & ~capped_b).sum()), int((capped_b & ~capped_a).sum())
    assert only_a + only_b <= CAP_ONE_SIDED * R, (capped_a ^ capped_b).nonzero().tolist()
    if only_a + only_b > 0:  # exact McNemar: the discordant pairs split as a fair coin would
        assert binomtest(only_a, only_a + only_b).pvalue >= P_MIN, (only_a, only_b)
    both = (~capped_a & ~capped_b).numpy()
    frame_a, frame_b = _classes(landscape, a), _classes(landscape, b)
    assert list(frame_a["critical_point"][both]) == list(frame_b["critical_point"][both])
    loss_gap = np.abs(frame_a["loss"].to_numpy() - frame_b["loss"].to_numpy())[both]
    assert loss_gap.max() <= DiagnosticsConfig().gap_tol
    test = ks_2samp(a.total_steps.numpy(), b.total_steps.numpy())
    assert test.pvalue >= P_MIN, test


def _classes(landscape, result: TrainResult):
    seeds = list(range(result.theta.shape[0]))
    config = DiagnosticsConfig(gap_tol=1e-3)
    frame, _ = classify(landscape, result.theta, seeds=seeds, diverged=result.diverged, config=config)
    return frame


def test_a_decision_at_a_threshold_is_found_and_only_there():
    landscape = TeacherStudent(TeacherStudentConfig(k=3, n=3))
    start = landscape.init([0])[0]
    path = stationarity_path(landscape, start, 0.1, 40)
    assert bool((path[1:] < path[:-1]).all())  # descent from this start lowers the measure every step
    on_path = TrainConfig(tol=float(path[30]) * (1 + 1e-13))
    assert decided_at_a_threshold(landscape, start, on_path, 40)
    assert not decided_at_a_threshold(landscape, start, TrainConfig(tol=float(path[30]) * (1 + 1e-9)), 40)
    assert not decided_at_a_threshold(landscape, start, on_path, 29)  # the path stops before it
    switch = TrainConfig(newton_polish=True, newton_polish_at=float(path[20]) * 100, tol=1e-12)
    assert decided_at_a_threshold(landscape, start, switch, 40)  # once refused: 100 times lower


@pytest.mark.slow
@pytest.mark.parametrize("k", [6, 8, 13])
@pytest.mark.parametrize("excess", [0, 1, 2])
def test_engines_agree_at_full_size(k, excess):
    """64 seeds per (k, n) by the published protocol with the Newton finish at 1e-4 (the contract in
    the module's docstring), and a forced-restart run without it at k = 6 (plain descent: exact)."""
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=k + excess))
    theta0 = landscape.init(list(range(64)))
    config = TrainConfig(max_steps=50_000, newton_polish=True, newton_polish_at=1e-4)
    compiled, batched = _engines(landscape, theta0, config)
    if excess == 0:
        assert_same_runs_at_isolated_minima(landscape, theta0, config, compiled, batched)
    else:
        assert_same_statistics(landscape, compiled, batched)
    if k == 6:
        compiled, batched = _engines(landscape, theta0, TrainConfig(lr=6.0, max_restarts=5, max_steps=20_000))
        assert_same_runs(landscape, compiled, batched, classes=False)
