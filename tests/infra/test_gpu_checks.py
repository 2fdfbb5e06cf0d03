"""`make gpu` (infra/gpu/checks.sh) as far as a machine without a GPU can check it: the script parses,
its pytest line runs every test module that has a gpu-marked test, those modules collect on the lent
image (no Ray, MLflow or Optuna: modules that need them skip with a reason), and its first check, one
tiny numba-cuda kernel, compiles and gives the known answer in numba's CUDA simulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "gpu" / "checks.sh"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

# pytest in a python where Ray, MLflow and Optuna cannot be imported, as on the lent GPU image
BLOCKING_PYTEST = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "mlflow", "optuna"):
            raise ModuleNotFoundError("not on the GPU image: " + name, name=name)
        return None
sys.meta_path.insert(0, Block())
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def _run(*command: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def _script_modules() -> list[str]:
    listed = _run("bash", str(SCRIPT), "--list-tests")
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.split()


def test_the_script_parses():
    done = _run("bash", "-n", str(SCRIPT))
    assert done.returncode == 0, done.stderr


def test_the_script_runs_every_gpu_marked_test_module():
    marker = "gpu"
    collected = _run(
        sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", marker, "-p", "no:cacheprovider",
        "-o", "addopts=--strict-markers", "tests",
    )  # fmt: skip
    assert collected.returncode == 0, collected.stdout[-2000:]
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    modules = sorted({line.split("::")[0] for line in ids})
    assert "tests/gpu/test_cuda.py" in modules and "tests/cluster/test_gpu.py" in modules
    assert _script_modules() == modules


def test_the_gpu_modules_collect_without_ray_mlflow_optuna():
    """On the lent image: no collection error; the hunt's module is skipped with its reason."""
    done = _run(
        sys.executable, "-c", BLOCKING_PYTEST, "--collect-only", "-q", "-rs", "-m", "gpu", "-p",
        "no:cacheprovider", "-o", "addopts=", *_script_modules(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert "error" not in done.stdout.lower(), done.stdout[-3000:]
    assert "tests/cluster/test_gpu.py" in done.stdout and "a hunt needs ray" in done.stdout
    assert "tests/gpu/test_cuda.py::test_spectra_on_cuda_equal_cpu[cuda]" in done.stdout


def test_the_numba_cuda_probe_runs_its_kernel_in_the_simulator():
    done = _run(sys.executable, "infra/gpu/numba_cuda_probe.py", env={**ENV, "NUMBA_ENABLE_CUDASIM": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "numba-cuda kernel: compiled and ran on simulator: correct" in done.stdout
