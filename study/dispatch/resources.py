"""What one chunk of replicas asks Ray for (a pipeline's ``resources``), and how many chunks fit in what
the cluster has right now."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Resources:
    """A chunk's request: ``cpus_per_chunk`` CPUs and, by ``device``,

    - ``cpu``: no GPU; the chunk trains on the CPU;
    - ``cuda``: always ``gpus_per_chunk`` of a GPU, whether or not the cluster has one yet (an autoscaler
      starts GPU nodes for the waiting tasks); the chunk trains on the GPU Ray assigned it, and fails
      where it has none;
    - ``auto``: ``gpus_per_chunk`` of a GPU while the cluster has GPUs, else CPU only (one machine as
      it is: a laptop trains on its CPU, a workstation on its GPU).
    """

    device: str = "auto"
    gpus_per_chunk: float = 0.25
    cpus_per_chunk: float = 1.0

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device: expected one of {', '.join(DEVICES)}; got {self.device!r}")
        whole = self.gpus_per_chunk >= 1 and self.gpus_per_chunk % 1 == 0
        if not (0 < self.gpus_per_chunk <= 1 or whole):  # Ray's rule for a task's GPU request
            raise ValueError(
                f"gpus_per_chunk: must be in (0, 1] or a whole number, got {self.gpus_per_chunk}"
            )
        if not self.cpus_per_chunk > 0 or not math.isfinite(self.cpus_per_chunk):
            raise ValueError(f"cpus_per_chunk: must be > 0, got {self.cpus_per_chunk}")

    def uses_gpu(self, cluster_gpus: float) -> bool:
        """Whether a chunk submitted now asks for a GPU share."""
        return self.device == "cuda" or (self.device == "auto" and cluster_gpus > 0)

    def task_options(self, cluster_gpus: float) -> dict[str, Any]:
        """Ray task options for a chunk submitted while the cluster has ``cluster_gpus`` GPUs."""
        options: dict[str, Any] = {"num_cpus": self.cpus_per_chunk}
        if self.uses_gpu(cluster_gpus):
            options["num_gpus"] = self.gpus_per_chunk
        return options

    def chunks_that_fit(self, cpus: float, gpus: float) -> int:
        """How many chunks run at once on ``cpus`` CPUs and ``gpus`` GPUs."""
        fit = math.floor(cpus / self.cpus_per_chunk + 1e-9)
        if self.uses_gpu(gpus):
            fit = min(fit, math.floor(gpus / self.gpus_per_chunk + 1e-9))
        return max(0, fit)


def parse_resources(raw: Any, where: str = "resources") -> Resources:
    """A pipeline's ``resources`` mapping; the ValueError names the field (``resources.device: ...``)."""
    if raw is None:
        return Resources()
    fields = ("cpus_per_chunk", "device", "gpus_per_chunk")
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with {', '.join(fields)}; got {raw!r}")
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {list(fields)}")
    for key in ("gpus_per_chunk", "cpus_per_chunk"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{where}.{key}: expected a number, got {value!r}")
    defaults = Resources()
    try:
        return Resources(
            device=raw.get("device", defaults.device),
            gpus_per_chunk=float(raw.get("gpus_per_chunk", defaults.gpus_per_chunk)),
            cpus_per_chunk=float(raw.get("cpus_per_chunk", defaults.cpus_per_chunk)),
        )
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None
