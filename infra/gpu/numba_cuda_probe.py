"""Compile and run one tiny numba-cuda kernel; print what numba found (NVVM, NVRTC, the device).

The first check of `make gpu` (infra/gpu/checks.sh): the CUDA descent kernel needs numba-cuda to
compile on the lent image, whose NVVM and NVRTC come from the CUDA toolkit wheels. Exit status 0 when
the kernel ran and gave the known answer, 1 otherwise. Under ``NUMBA_ENABLE_CUDASIM=1`` the kernel
runs in numba's simulator (the CPU test of this script).
"""

from __future__ import annotations

import os
import sys

import numba
import numpy as np
from numba import cuda


@cuda.jit
def axpy(a, x, y, out):  # out = a x + y, one thread per entry
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a * x[i] + y[i]


def probe_library(name: str) -> str:
    """'found (version)' or 'not found: reason' for NVVM or NVRTC."""
    try:
        if name == "NVVM":
            from numba.cuda.cudadrv import nvvm

            return f"found (IR version {nvvm.NVVM().get_ir_version()})"
        from numba.cuda.cudadrv import nvrtc

        return f"found (version {nvrtc.NVRTC().get_version()})"
    except Exception as exc:  # noqa: BLE001 - any failure is the answer printed
        return f"not found: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def main() -> int:
    simulator = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    print(f"numba {numba.__version__}; CUDA available: {cuda.is_available()}; simulator: {simulator}")
    if not simulator:
        for name in ("NVVM", "NVRTC"):
            print(f"{name}: {probe_library(name)}")

    x = np.arange(1000, dtype=np.float64)
    y = np.ones_like(x)
    out = np.zeros_like(x)
    try:
        axpy[(x.size + 127) // 128, 128](2.0, x, y, out)
    except Exception as exc:  # noqa: BLE001 - the answer printed is the failure
        print(f"numba-cuda kernel: FAILED to compile or run: {type(exc).__name__}: {exc}")
        return 1
    ok = bool(np.array_equal(out, 2.0 * x + 1.0))
    device = "simulator" if simulator else cuda.get_current_device().name
    print(f"numba-cuda kernel: compiled and ran on {device}: {'correct' if ok else 'WRONG ANSWER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
