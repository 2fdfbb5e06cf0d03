"""Ray: start or join a cluster, and run chunks of replicas as tasks (CPU or fractional GPU)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray

from study.record import RunBatch
from study.runs import RunSpec, run_replicas, verify_batch


@dataclass(frozen=True)
class ClusterInfo:
    """What the driver needs to size its work: CPUs and GPUs available to tasks."""

    address: str
    cpus: int
    gpus: float


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> ClusterInfo:
    """Join ``address`` (``auto``, ``ray://...`` or ``HOST:PORT``) or start a local instance bound to
    127.0.0.1 with the dashboard off; idempotent within a process."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        env = {
            "env_vars": {
                "RAY_USAGE_STATS_ENABLED": "0",
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true",
                "OMP_NUM_THREADS": "1",
            }
        }
        if address is None:
            _loopback_only()
            ray.init(
                num_cpus=num_cpus,
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                log_to_driver=False,
                runtime_env=env,
                logging_level=logging.ERROR,
            )
        else:
            ray.init(address=address, log_to_driver=False, runtime_env=env, logging_level=logging.ERROR)
    resources = ray.cluster_resources()
    return ClusterInfo(
        address=address or "local",
        cpus=int(resources.get("CPU", 1)),
        gpus=float(resources.get("GPU", 0.0)),
    )


def _loopback_only() -> None:
    """Keep a local instance on 127.0.0.1: ``ray.init(_node_ip_address="127.0.0.1")`` alone is turned
    into the machine's external address by Ray (``resolve_ip_for_localhost``); with cluster mode off,
    Ray resolves the node address to the loopback and binds its servers there (as on macOS)."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read by the processes Ray starts
    ray_constants.ENABLE_RAY_CLUSTER = False


@ray.remote(max_retries=2)
def _run_chunk(spec: RunSpec, seeds: list[int]) -> RunBatch:
    """One Ray task: a chunk of replicas, on the GPU Ray assigned to it if any; its certified spurious
    minima are re-verified in float64 on the CPU before the chunk returns."""
    import torch

    torch.set_num_threads(1)
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    return verify_batch(spec, run_replicas(spec, seeds, device=device))


def submit_chunk(spec: RunSpec, seeds: list[int], *, gpu_fraction: float, use_gpu: bool) -> Any:
    """Submit one chunk; asks for ``gpu_fraction`` of a GPU when the cluster has GPUs."""
    options: dict[str, Any] = {"num_cpus": 1}
    if use_gpu:
        options["num_gpus"] = gpu_fraction
    return _run_chunk.options(**options).remote(spec, seeds)


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()
