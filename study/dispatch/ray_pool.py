"""Ray: start or join a cluster, and run chunks of replicas as tasks (CPU or fractional GPU)."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import ray

from study.dispatch import local_ray
from study.dispatch.local_ray import LocalNode
from study.errors import UsageError
from study.runs import RunSpec, run_replicas, verify_batch, verify_runs
from study.spec_fields import Resources
from study.telemetry import TELEMETRY_OFF


@dataclass(frozen=True)
class ClusterInfo:
    """What the driver needs to size its work: CPUs and GPUs available to tasks."""

    address: str
    cpus: int
    gpus: float


_LOCAL: list[LocalNode] = []  # the head this process started (stopped by shutdown or at exit)
PROBE_SECONDS = 5.0


class UnreachableClusterError(UsageError):
    """A Ray address where nothing answers (one line for the user)."""


def check_address(address: str | None, *, timeout: float = PROBE_SECONDS) -> None:
    """Raise :class:`UnreachableClusterError` unless a Ray cluster answers at ``address`` (``HOST:PORT``
    of a GCS, or ``ray://HOST:PORT`` of a client server) within ``timeout`` seconds in all: something
    accepts a TCP connection there, and it answers one of Ray's own gRPC calls. ``ray.init`` would retry
    an absent head, or a port where something else listens, for minutes. ``None``, ``auto`` and
    ``local`` pass (Ray finds or starts those itself)."""
    if address is None or address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise UnreachableClusterError(f"--address: expected HOST:PORT or ray://HOST:PORT, got {address!r}")
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UnreachableClusterError(
            f"--address: no Ray cluster answers at {target} within {timeout:g} s ({why})"
        ) from None
    not_ray = _not_ray(target, client=address.startswith("ray://"), timeout=deadline - time.monotonic())
    if not_ray:
        raise UnreachableClusterError(
            f"--address: {target} accepts connections but is not a Ray "
            f"{'client server' if address.startswith('ray://') else 'head (GCS)'} ({not_ray})"
        )


def _not_ray(target: str, *, client: bool, timeout: float) -> str | None:
    """Why the gRPC server at ``target`` is not Ray's (the status of one cheap call: the GCS's cluster
    id, or the client server's ping), or None where Ray answers. An answer refused for want of a token
    is Ray's too: ``ray.init`` then says so itself."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc, ray_client_pb2, ray_client_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            if client:
                ping_type = ray_client_pb2.ClusterInfoType.PING  # type: ignore[attr-defined]  # generated
                ping = ray_client_pb2.ClusterInfoRequest(type=ping_type)  # type: ignore[attr-defined]
                ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(ping, timeout=max(timeout, 0.1))
            else:
                request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
                gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                    request, timeout=max(timeout, 0.1)
                )
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]  # a grpc.Call as well
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return "no gRPC answer in time"
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
                details = (exc.details() or "").split("\n")[0][:120]  # type: ignore[attr-defined]
                return f"gRPC {code.name}: {details}"
    return None


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> ClusterInfo:
    """Join ``address`` (``auto``, ``ray://...`` or ``HOST:PORT``) or, for ``None``, start a private
    local head on 127.0.0.1 (free ports, its own temporary directory, no dashboard: see
    :mod:`study.dispatch.local_ray`) and join it; idempotent within a process."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", TELEMETRY_OFF["RAY_USAGE_STATS_ENABLED"])
    if not ray.is_initialized():
        env = {"env_vars": {**TELEMETRY_OFF, "OMP_NUM_THREADS": "1"}}
        node_ip: dict[str, Any] = {}
        if address is None:
            main_thread = threading.current_thread() is threading.main_thread()
            head = local_ray.start_head(num_cpus=num_cpus, die_with_parent=main_thread)
            _LOCAL.append(head)
            atexit.register(shutdown)
            _use_token(head.auth_env)
            address = head.gcs_address
        if _on_loopback(address):
            _loopback_only()
            node_ip = {"_node_ip_address": "127.0.0.1"}
        ray.init(
            address=address,
            log_to_driver=False,
            runtime_env=env,
            logging_level=logging.ERROR,
            **node_ip,
        )
    return cluster_now()


def _use_token(auth_env: dict[str, str]) -> None:
    """Give this driver the head's token. Ray reads the authentication mode into its configuration when
    it is imported (and caches the token on first use): both are reloaded here, as ``ray.init`` does
    for a cluster it starts itself."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    os.environ.update(auth_env)
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _on_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost")


def _loopback_only() -> None:
    """Keep this driver on 127.0.0.1: with Ray's cluster mode on (the default on Linux), Ray turns the
    loopback address of a head into the machine's external address (``resolve_ip_for_localhost``) and
    cannot reach servers bound to 127.0.0.1; off, the addresses stay as given (as on macOS)."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read by the processes Ray starts
    ray_constants.ENABLE_RAY_CLUSTER = False


def cluster_now() -> ClusterInfo:
    """CPUs and GPUs of the nodes alive now (Ray's ``cluster_resources``)."""
    resources = ray.cluster_resources()
    return ClusterInfo(
        address="local" if _LOCAL else "cluster",
        cpus=int(resources.get("CPU", 0)),
        gpus=float(resources.get("GPU", 0.0)),
    )


@dataclass(frozen=True)
class Timed:
    """A task's result with its own timing (seconds on the worker's CPU slot): the whole task, and of it
    the re-verification of certified spurious minima (the hunt's account, :mod:`study.reports.account`)."""

    value: Any  # RunBatch of a chunk, DataFrame of a follow-up verification
    seconds: float
    verify_seconds: float


# A chunk is a pure function of (spec, seeds): when its worker or node dies, Ray runs it again
# elsewhere and the driver, the only writer, sees one result.
@ray.remote(max_retries=4)
def _run_chunk(spec: RunSpec, seeds: list[int], device: str) -> Timed:
    """One Ray task: a chunk of replicas, on the GPU Ray assigned to it when it asked for one. Where the
    landscape knows L* the labels are final here and certified spurious minima are re-verified in float64
    on the CPU before the chunk returns; where it does not, the end points and label-free diagnostics go
    back to the driver, which labels them and sends the candidates to :func:`submit_verification`."""
    import torch

    start = time.perf_counter()
    torch.set_num_threads(1)
    assigned = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
    if device == "cuda" and not assigned:
        raise RuntimeError(
            f"resources.device is cuda but this worker has no CUDA GPU (Ray assigned {ray.get_gpu_ids()}, "
            f"torch.cuda.is_available() is {torch.cuda.is_available()})"
        )
    # Ray sets CUDA_VISIBLE_DEVICES to the GPUs it assigned: "cuda" is the first of them
    batch = run_replicas(spec, seeds, device="cuda" if assigned else "cpu")
    verifying = time.perf_counter()
    batch = verify_batch(spec, batch)
    end = time.perf_counter()
    return Timed(batch, end - start, end - verifying)


def submit_chunk(spec: RunSpec, seeds: list[int], resources: Resources, *, cluster_gpus: float) -> Any:
    """Submit one chunk asking for ``resources`` (a GPU share by their device and the cluster's GPUs)."""
    options = resources.task_options(cluster_gpus)
    device = "cuda" if resources.device == "cuda" else "auto"
    return _run_chunk.options(**options).remote(spec, seeds, device)


@ray.remote(max_retries=4)
def _verify_rows(spec: RunSpec, frame: pd.DataFrame, theta: np.ndarray, theta0: np.ndarray) -> Timed:
    """A follow-up Ray task: re-verify runs the driver labelled (``frame`` with their ``l_star``)."""
    import torch

    start = time.perf_counter()
    torch.set_num_threads(1)
    verified = verify_runs(spec, frame, theta, theta0)
    seconds = time.perf_counter() - start
    return Timed(verified, seconds, seconds)


def submit_verification(
    spec: RunSpec, frame: pd.DataFrame, theta: np.ndarray, theta0: np.ndarray, resources: Resources
) -> Any:
    """Submit a follow-up task re-verifying the rows of ``frame`` (aligned with ``theta, theta0: (R, P)``);
    re-verification runs in float64 on the CPU, so it asks for a chunk's CPUs and no GPU."""
    return _verify_rows.options(num_cpus=resources.cpus_per_chunk).remote(spec, frame, theta, theta0)


def shutdown() -> None:
    """Leave the cluster, and stop the local head if this process started one."""
    if ray.is_initialized():
        ray.shutdown()
    while _LOCAL:
        _LOCAL.pop().stop()
