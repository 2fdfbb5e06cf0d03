"""The CUDA engine holds the engine contract (``cuda_contract.py``): under numba's CUDA simulator in
the default suite (a subprocess, so ``NUMBA_ENABLE_CUDASIM`` never reaches this process's numba), and on
a real device under ``-m gpu``. The engine is chosen only where the one-time probe kernel compiled and
ran (``study.training.cuda_probe``): under the simulator, and without a device."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def _contract(env: dict[str, str], timeout: int) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "cuda_contract.py")]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_cuda_kernel_holds_the_contract_under_the_simulator():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "CUDA_CONTRACT_DEVICE": "cpu"}
    result = _contract(env, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout, result.stdout[-2000:]


@pytest.mark.gpu
def test_the_cuda_kernel_holds_the_contract_on_the_device():
    env = {**os.environ, "CUDA_CONTRACT_DEVICE": "cuda", "CUDA_CONTRACT_LANES": "32"}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    result = _contract(env, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout, result.stdout[-2000:]


PROBE = """
import sys
from numba import cuda
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.training import cuda_probe as probe_module
from study.training.gd import TrainConfig, engine_for

probe = probe_module.cuda_probe()
print(probe)
assert probe_module.cuda_probe() is probe  # probed once per process
assert probe_module.probe_kernel() == probe

@cuda.jit
def broken(a, x, y, out):  # writes past the end: the simulator raises, as a failing compile would
    out[out.size] = a

probe_module._axpy = broken
failed = probe_module.probe_kernel()
print(failed)
landscape = TeacherStudent(TeacherStudentConfig(k=3, n=3), device="cpu")
probe_module.cuda_probe.cache_clear()
probe_module.cuda_probe()  # cached: the failure now
try:
    engine_for(landscape, landscape.init([0]), TrainConfig(engine="cuda"))
except ValueError as exc:
    assert "\\n" not in str(exc), str(exc)  # one line
    print("refused:", exc)
"""


def test_the_probe_compiles_and_runs_its_kernel_under_the_simulator_and_reports_a_failure():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "CudaProbe(ok=True, detail='simulator')", lines
    assert lines[1].startswith(
        "CudaProbe(ok=False, detail='numba-cuda failed to compile or run a kernel: "
    ), lines
    (refused,) = [line for line in lines if line.startswith("refused:")]
    assert "engine 'cuda' cannot run: numba-cuda failed to compile or run a kernel" in refused, refused
    assert refused.endswith("(use 'torch' or 'auto')"), refused


def test_without_a_cuda_device_the_engine_falls_back_and_cuda_is_refused_in_one_line():
    from numba import cuda

    from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
    from study.training.cuda_probe import cuda_probe
    from study.training.gd import TrainConfig, engine_for

    if cuda.is_available():
        pytest.skip("numba sees a CUDA device here")
    probe = cuda_probe()
    assert not probe.ok and "no CUDA device" in probe.detail
    landscape = TeacherStudent(TeacherStudentConfig(k=3, n=3), device="cpu")
    theta0 = landscape.init([0])
    assert engine_for(landscape, theta0, TrainConfig()) == "compiled"  # auto: never the CUDA engine
    with pytest.raises(ValueError) as refused:
        engine_for(landscape, theta0, TrainConfig(engine="cuda"))
    message = str(refused.value)
    assert "\n" not in message and f"engine 'cuda' cannot run: {probe.detail}" in message, message
