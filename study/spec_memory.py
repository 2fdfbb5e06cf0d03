"""Whether one chunk of a pipeline's runs fits in this machine's memory, estimated from the landscape's
parameter count P before a hunt starts (``study hunt`` refuses one that cannot fit; ``study submit``
leaves it to the cluster, whose machines may be larger).

The estimate is a lower bound on what a chunk of R runs holds at once, in bytes:
  training      TRAINING_COPIES arrays (R, P) in the run dtype (start, iterate, gradient, step)
  escape test   ESCAPE_COPIES arrays (R * M, P) in the run dtype (M = diagnostics.escape_perturbations)
  Hessians      HESSIAN_COPIES arrays (c, P, P) in float64, c = min(R, 32), when P <= diagnostics.max_dense
so a pipeline refused here could not have run; one let through may still need more (a landscape's own
intermediates, e.g. teacher-student's (R, n, n) pair geometry).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from study.errors import PipelineError
from study.landscapes.registry import LANDSCAPES, landscape_config
from study.spec import HuntSpec, corner_values

TRAINING_COPIES = 4
ESCAPE_COPIES = 2
HESSIAN_COPIES = 2
HESSIAN_CHUNK = 32  # replicas per dense Hessian (study.diagnostics.spectrum.dense_spectrum)
DTYPE_BYTES = {"float64": 8, "float32": 4}


@dataclass(frozen=True)
class ChunkMemory:
    """Bytes one chunk of ``runs`` replicas of ``n_params`` parameters holds at least."""

    runs: int
    n_params: int
    parameters: int  # training and escape-test copies of theta
    hessians: int  # dense Hessians (0 when the spectrum is found by Lanczos)

    @property
    def total(self) -> int:
        return self.parameters + self.hessians


def chunk_memory(spec: HuntSpec, values: dict[str, Any]) -> ChunkMemory | None:
    """The estimate for one chunk of ``spec`` at resolved ``values``; None where the
    landscape cannot tell P from its configuration."""
    run = spec.run_spec(values)
    config = landscape_config(spec.landscape, run.params)
    n_params = int(LANDSCAPES[spec.landscape].build.parameter_count(config))
    if n_params < 0:
        return None
    runs = min(spec.chunk_size, spec.runs_per_trial)
    itemsize = DTYPE_BYTES[run.dtype]
    escape = runs * run.diagnostics.escape_perturbations
    parameters = (TRAINING_COPIES * runs + ESCAPE_COPIES * escape) * n_params * itemsize
    dense = n_params <= run.diagnostics.max_dense
    hessians = HESSIAN_COPIES * min(runs, HESSIAN_CHUNK) * n_params**2 * 8 if dense else 0
    return ChunkMemory(runs, n_params, parameters, hessians)


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.3g} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def check_fits_in_memory(spec: HuntSpec, memory: int | None = None) -> None:
    """Raise :class:`PipelineError` naming the field when a chunk at a corner of the search space (the
    points :func:`study.spec.corner_values` validates) needs more than ``memory`` bytes (default: this
    machine's)."""
    memory = machine_memory() if memory is None else memory
    if memory is None:
        return
    for sampled in corner_values(spec):
        need = chunk_memory(spec, spec.resolve(sampled))
        if need is None or need.total <= memory:
            continue
        where = "fixed/search" if sampled else "fixed"
        point = ", ".join(f"{k}={v}" for k, v in sampled.items())
        parts = f"parameters {_size(need.parameters)}" + (
            f", Hessians {_size(need.hessians)}" if need.hessians else ""
        )
        raise PipelineError(
            f"{where}: a chunk of {need.runs} runs at P = {need.n_params:,} parameters"
            + (f" (at {point})" if point else "")
            + f" needs at least {_size(need.total)} ({parts}), more than this machine's "
            f"{_size(memory)} of memory; lower the sizes or chunk_size"
        )
