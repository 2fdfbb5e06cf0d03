"""One `train`, two engines: the compiled per-replica loop and the batched torch loop follow the same
protocol step for step (same steps, restarts, stop reasons and classes, end points within 1e-12, the
same loss-curve samples), with restarts forced, budgets, stalls and the Newton finish."""

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
        config = DiagnosticsConfig(gap_tol=1e-3)
        seeds = list(range(a.theta.shape[0]))
        frame_a, _ = classify(landscape, a.theta, seeds=seeds, diverged=a.diverged, config=config)
        frame_b, _ = classify(landscape, b.theta, seeds=seeds, diverged=b.diverged, config=config)
        assert list(frame_a["critical_point"]) == list(frame_b["critical_point"])


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


@pytest.mark.slow
@pytest.mark.parametrize("k", [6, 8, 13])
@pytest.mark.parametrize("excess", [0, 1, 2])
def test_engines_agree_at_full_size(k, excess):
    """>= 64 seeds per (k, n) by the published protocol (and a forced-restart run at k = 6)."""
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=k + excess))
    theta0 = landscape.init(list(range(64)))
    config = TrainConfig(max_steps=50_000, newton_polish=True, newton_polish_at=1e-4)
    compiled, batched = _engines(landscape, theta0, config)
    assert_same_runs(landscape, compiled, batched)
    if k == 6:
        compiled, batched = _engines(landscape, theta0, TrainConfig(lr=6.0, max_restarts=5, max_steps=20_000))
        assert_same_runs(landscape, compiled, batched, classes=False)
