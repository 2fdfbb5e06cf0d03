"""The CUDA engine holds the engine contract (``cuda_contract.py``): under numba's CUDA simulator in
the default suite (a subprocess, so ``NUMBA_ENABLE_CUDASIM`` never reaches this process's numba), and on
a real device under ``-m gpu``."""

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
