"""CUDA == CPU for every path that trains or diagnoses, in float64.

Every comparison runs twice: on ``cuda`` (marked ``gpu``; skipped where no CUDA device exists) and
with the device set to ``cpu`` in the default suite, so an API change breaks it here and not on the
next lent GPU (on CPU each comparison is the same code on both sides: determinism, not rounding).
Tolerances: one gradient or Hessian evaluation agrees to 1e-12 (different summation orders); trained
end points to 1e-8 (rounding differences carried through thousands of steps, below the stopping
tolerance's effect); classes exactly.
"""

import numpy as np
import pytest
import torch

from study.diagnostics.critical import DiagnosticsConfig, classify
from study.diagnostics.spectrum import dense_spectrum, lanczos_spectrum
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.procedures.two_phase_sgd import SGDConfig
from study.runs import RunSpec, run_replicas
from study.training.gd import TrainConfig, newton_finish, train

NO_CUDA = not torch.cuda.is_available()
SEEDS = list(range(8))


@pytest.fixture(
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(NO_CUDA, reason="needs a CUDA device (none found)")],
        ),
    ]
)
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device compared against the CPU: cpu in the default suite, cuda under ``-m gpu``."""
    return torch.device(request.param)


def landscapes(device: torch.device, k: int = 6, n: int = 6) -> tuple[TeacherStudent, TeacherStudent]:
    config = TeacherStudentConfig(k=k, n=n)
    return TeacherStudent(config), TeacherStudent(config, device=device)


def test_gradient_and_hessian_on_cuda_equal_cpu(device):
    cpu, gpu = landscapes(device, 6, 7)
    theta = cpu.init(SEEDS)
    torch.testing.assert_close(gpu.grad(theta.to(device)).cpu(), cpu.grad(theta), rtol=0, atol=1e-12)
    torch.testing.assert_close(gpu.hessian(theta.to(device)).cpu(), cpu.hessian(theta), rtol=0, atol=1e-12)


@pytest.mark.parametrize("newton", [False, True])
def test_trainer_on_cuda_reaches_the_cpu_end_points(newton, device):
    cpu, gpu = landscapes(device)
    config = TrainConfig(max_steps=50_000, newton_polish=newton, newton_polish_at=1e-2)
    theta0 = cpu.init(SEEDS)
    on_cpu = train(cpu, theta0, config)
    on_gpu = train(gpu, theta0.to(device), config)
    assert on_gpu.theta.device.type == device.type
    torch.testing.assert_close(on_gpu.theta.cpu(), on_cpu.theta, rtol=0, atol=1e-8)
    assert on_gpu.converged.cpu().tolist() == on_cpu.converged.tolist()


def test_newton_finish_on_cuda_equals_cpu(device):
    cpu, gpu = landscapes(device)
    start = train(cpu, cpu.init(SEEDS), TrainConfig(tol=1e-3)).theta
    on_cpu = newton_finish(cpu, start, tol=1e-10, max_steps=20)
    on_gpu = newton_finish(gpu, start.to(device), tol=1e-10, max_steps=20)
    assert on_gpu.accepted.cpu().tolist() == on_cpu.accepted.tolist()
    torch.testing.assert_close(on_gpu.theta.cpu(), on_cpu.theta, rtol=0, atol=1e-10)


def test_spectra_on_cuda_equal_cpu(device):
    cpu, gpu = landscapes(device, 5, 5)
    theta = train(cpu, cpu.init(SEEDS[:4]), TrainConfig(tol=1e-9)).theta
    dense_cpu, dense_gpu = dense_spectrum(cpu, theta), dense_spectrum(gpu, theta.to(device))
    torch.testing.assert_close(dense_gpu.eigenvalues.cpu(), dense_cpu.eigenvalues, rtol=0, atol=1e-10)
    lanczos_gpu = lanczos_spectrum(gpu, theta.to(device), seeds=SEEDS[:4])
    torch.testing.assert_close(lanczos_gpu.lambda_min.cpu(), dense_cpu.lambda_min, rtol=0, atol=1e-8)


def test_classification_of_end_points_on_cuda_equals_cpu(device):
    spec = RunSpec("teacher_student", {"k": 6, "n": 6}, train=TrainConfig(max_steps=50_000))
    on_cpu = run_replicas(spec, SEEDS)
    on_gpu = run_replicas(spec, SEEDS, device=device)
    assert list(on_gpu.frame["critical_point"]) == list(on_cpu.frame["critical_point"])
    assert list(on_gpu.frame["certified"]) == list(on_cpu.frame["certified"])
    np.testing.assert_allclose(on_gpu.frame["loss"], on_cpu.frame["loss"], rtol=0, atol=1e-10)
    assert on_gpu.frame["device"].iloc[0].startswith(device.type)
    # classify directly on CUDA tensors too
    cpu, gpu = landscapes(device)
    frame_gpu, _ = classify(
        gpu, torch.as_tensor(on_cpu.theta, device=device), seeds=SEEDS, config=DiagnosticsConfig()
    )
    assert list(frame_gpu["critical_point"]) == list(on_cpu.frame["critical_point"])


def test_classification_landscape_sgd_on_cuda_equals_cpu(device):
    params = {"model": "mlp", "hidden": 16, "max_train": 60, "max_test": 60}
    spec = RunSpec("classification", params, train=SGDConfig(phase1_epochs=2, phase2_epochs=2))
    on_cpu = run_replicas(spec, SEEDS[:3])
    on_gpu = run_replicas(spec, SEEDS[:3], device=device)
    np.testing.assert_allclose(on_gpu.theta, on_cpu.theta, rtol=0, atol=1e-8)
    np.testing.assert_allclose(on_gpu.frame["train_acc"], on_cpu.frame["train_acc"], rtol=0, atol=0)
    assert on_gpu.frame["device"].iloc[0].startswith(device.type)


def test_bench_trainer_runs_on_cuda(device, capsys):
    from study.cli import main

    argv = ["bench", "trainer", "--device", str(device), "--k", "5", "--runs", "16", "--anchor-runs", "2"]
    assert main([*argv, "--engines", "torch"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("speedup: ")
    assert lines[-2].split()[0] == "5" and lines[-2].split()[4].endswith("/s")  # replica-steps per second
