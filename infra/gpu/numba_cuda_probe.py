"""Compile and run one tiny numba-cuda kernel; print what numba found (NVVM, NVRTC, the device).

The first check of `make gpu` (infra/gpu/checks.sh): the CUDA descent kernel needs numba-cuda to
compile on the lent image, whose NVVM and NVRTC come from the CUDA toolkit wheels. The probe is the
library's (:mod:`study.training.cuda_probe`, which the trainer's engine choice runs too). Exit status 0
when the kernel ran and gave the known answer, 1 otherwise. Under ``NUMBA_ENABLE_CUDASIM=1`` the kernel
runs in numba's simulator (the CPU test of this script).
"""

from __future__ import annotations

import os
import sys

import numba
from numba import cuda

from study.training.cuda_probe import probe_kernel, probe_library


def main() -> int:
    simulator = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    print(f"numba {numba.__version__}; CUDA available: {cuda.is_available()}; simulator: {simulator}")
    if not simulator:
        for name in ("NVVM", "NVRTC"):
            print(f"{name}: {probe_library(name)}")
    probe = probe_kernel()
    if not probe.ok:
        print(f"numba-cuda kernel: FAILED: {probe.detail}")
        return 1
    print(f"numba-cuda kernel: compiled and ran on {probe.detail}: correct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
