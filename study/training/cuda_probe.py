"""Whether numba-cuda can compile and run a kernel here: one tiny kernel (``out = a x + y``) compiled,
run and checked against its known answer, once per process.

``numba.cuda.is_available()`` only says that a device (or the simulator, ``NUMBA_ENABLE_CUDASIM=1``) is
seen; the toolchain that compiles a kernel (NVVM and NVRTC, from the CUDA toolkit wheels) can still be
missing or broken. The CUDA engine is chosen only where this probe passed (:mod:`study.training.gd`);
``infra/gpu/numba_cuda_probe.py`` prints the same probe on a lent machine. Import this module only
where CUDA is wanted: importing it imports ``numba.cuda``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
from numba import cuda

__all__ = ["CudaProbe", "cuda_probe", "probe_kernel", "probe_library"]

PROBE_SIZE = 1000  # entries of the probe's vectors: 8 blocks of 128 threads


@cuda.jit
def _axpy(a, x, y, out):  # out = a x + y, one thread per entry; compiled at its first launch
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x  # type: ignore[operator]
    if i < out.size:
        out[i] = a * x[i] + y[i]


@dataclass(frozen=True)
class CudaProbe:
    """The probe's answer: ``ok`` when the kernel compiled, ran and gave the known answer; ``detail``
    names where it ran ("simulator" or the device) or, in one line, why it did not."""

    ok: bool
    detail: str


def probe_kernel() -> CudaProbe:
    """Compile and run the probe kernel now (no cache: :func:`cuda_probe` is the cached one)."""
    simulator = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    if not cuda.is_available():
        return CudaProbe(False, "numba sees no CUDA device (numba.cuda.is_available() is False)")
    x = np.arange(PROBE_SIZE, dtype=np.float64)
    y = np.ones_like(x)
    out = np.zeros_like(x)
    try:
        _axpy[(x.size + 127) // 128, 128](2.0, x, y, out)
    except Exception as exc:  # noqa: BLE001 - any failure to compile or run is the answer
        return CudaProbe(False, f"numba-cuda failed to compile or run a kernel: {_one_line(exc)}")
    name = "simulator" if simulator else cuda.get_current_device().name  # bytes in some numba versions
    device = name.decode() if isinstance(name, bytes) else str(name)
    if not np.array_equal(out, 2.0 * x + 1.0):
        return CudaProbe(False, f"numba-cuda kernel gave a wrong answer on {device}")
    return CudaProbe(True, device)


@functools.cache
def cuda_probe() -> CudaProbe:
    """:func:`probe_kernel`, run once per process (a kernel compile costs seconds)."""
    return probe_kernel()


def probe_library(name: str) -> str:
    """'found (version)' or 'not found: reason' for numba-cuda's ``NVVM`` or ``NVRTC``."""
    try:
        if name == "NVVM":
            from numba.cuda.cudadrv import nvvm

            return f"found (IR version {nvvm.NVVM().get_ir_version()})"
        from numba.cuda.cudadrv import nvrtc

        return f"found (version {nvrtc.NVRTC().get_version()})"
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return f"not found: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
