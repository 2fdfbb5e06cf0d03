"""The CUDA engine's contract cases (not collected by name: ``test_cuda_engine.py`` runs them under
numba's CUDA simulator in a subprocess, and on a real device under ``-m gpu``).

Each case trains the same starts with the CUDA engine and the CPU compiled engine and holds them to
the engine contract of ``test_engines.py``: same stop reasons, steps, restarts, step sizes, Newton
steps and curve samples, end points within 1e-12. Sizes are tiny (the simulator runs Python).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.training.cuda_engine import train_cuda, train_cuda_cells
from study.training.gd import TrainConfig, TrainResult, engine_for, train

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    # the simulator's block manager polls its threads while holding the GIL; every syncthreads then
    # waits a whole switch interval (5 ms) unless it is short
    sys.setswitchinterval(2e-5)
DEVICE = os.environ.get("CUDA_CONTRACT_DEVICE", "cpu")  # "cuda" on a lent GPU: Newton on the device
LANES = int(os.environ.get("CUDA_CONTRACT_LANES", "2"))  # 2 < n: lanes stride over student rows


def _compiled(
    landscape: TeacherStudent, theta0: torch.Tensor, config: TrainConfig, budget=None
) -> TrainResult:
    cpu = TeacherStudent(landscape.cfg)
    return train(cpu, theta0.cpu(), replace(config, engine="compiled"), budget=budget)


def assert_same(a: TrainResult, b: TrainResult) -> None:
    assert a.stop_reason == b.stop_reason
    for field in ("steps", "total_steps", "restarts", "newton_steps", "converged", "diverged", "lr"):
        assert torch.equal(getattr(a, field).cpu(), getattr(b, field).cpu()), field
    np.testing.assert_allclose(a.theta.cpu().numpy(), b.theta.cpu().numpy(), rtol=0, atol=1e-12)
    assert torch.equal(a.curve_steps.cpu(), b.curve_steps.cpu())
    assert torch.equal(a.curve.isnan().cpu(), b.curve.isnan().cpu())
    np.testing.assert_allclose(
        a.curve.cpu().numpy(), b.curve.cpu().numpy(), rtol=1e-12, atol=1e-12, equal_nan=True
    )


def test_two_cells_in_one_launch_with_budgets_and_the_newton_finish():
    """k = n = 3 (identity teacher) and k = 3, n = 4 (Gaussian teacher) in one launch."""
    config = TrainConfig(max_steps=600, newton_polish=True, newton_polish_at=0.1, curve_points=12)
    square = TeacherStudent(TeacherStudentConfig(k=3, n=3), device=DEVICE)
    wide = TeacherStudent(TeacherStudentConfig(k=3, n=4, teacher="gaussian", teacher_seed=1), device=DEVICE)
    starts = [square.init([0, 1, 2]), wide.init([3, 4])]
    budgets = [torch.tensor([600, 40, 600]), None]
    results = train_cuda_cells(
        [(square, starts[0]), (wide, starts[1])], config, budgets=budgets, threads=LANES
    )
    stops = set()
    for landscape, theta0, budget, result in zip((square, wide), starts, budgets, results, strict=True):
        assert_same(result, _compiled(landscape, theta0, config, budget))
        stops |= set(result.stop_reason)
    assert int(results[0].steps[1]) == 40 and results[0].stop_reason[1] == "max_steps"  # its budget
    assert int(results[0].newton_steps.sum()) > 0 and "converged" in stops  # the Newton finish ran


def test_forced_restarts_and_divergence():
    landscape = TeacherStudent(TeacherStudentConfig(k=3, n=3), device=DEVICE)
    theta0 = landscape.init([5, 6])
    config = TrainConfig(lr=6.0, max_restarts=3, max_steps=60, curve_points=8)
    result = train_cuda(landscape, theta0, config, threads=LANES)
    assert int(result.restarts.min()) >= 1  # the step blew up and halved
    assert_same(result, _compiled(landscape, theta0, config))


def test_a_stall_with_a_general_teacher():
    landscape = TeacherStudent(TeacherStudentConfig(k=3, n=4, teacher="non_orthogonal"), device=DEVICE)
    theta0 = landscape.init([7, 8])
    config = TrainConfig(max_steps=400, stall_window=20, stall_rtol=0.05, stall_reductions=1, curve_points=8)
    result = train_cuda(landscape, theta0, config, threads=LANES)
    assert "stalled" in result.stop_reason
    assert_same(result, _compiled(landscape, theta0, config))


def test_engine_choice():
    landscape = TeacherStudent(TeacherStudentConfig(k=3, n=3), device=DEVICE)
    theta0 = landscape.init([0])
    assert engine_for(landscape, theta0, TrainConfig(engine="cuda")) == "cuda"
    assert engine_for(landscape, theta0, TrainConfig()) == ("cuda" if DEVICE == "cuda" else "compiled")
    assert engine_for(landscape, theta0.float(), TrainConfig()) == "torch"  # float32
    big = TeacherStudent(TeacherStudentConfig(k=60, n=60), device=DEVICE)  # 86 KB of shared memory
    with pytest.raises(ValueError, match="engine 'cuda'"):
        engine_for(big, big.init([0]), TrainConfig(engine="cuda"))
