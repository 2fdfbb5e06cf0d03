"""Ray nodes of our own on 127.0.0.1: ``ray start --block`` with a private temporary directory and free
ports only, so that several hunts (and test clusters) share one machine without touching each other.

Ray's defaults are fixed ports: the dashboard agent's HTTP server (52365), the autoscaler's and the
dashboard's metrics servers (44217, 44227), the job API (8265), the client server (10001) and a worker
port range starting at 10002; and ``ray.init()`` joins whatever cluster ``/tmp/ray/ray_current_cluster``
names. A node started here asks the OS for every port, keeps its address file in its own directory, binds
the loopback only, and dies with the process that started it (Linux: the parent-death signal; the node's
own reaper then stops its process group).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Usage telemetry off in every Ray process (MLflow honours DO_NOT_TRACK only as "true").
TELEMETRY_OFF = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
# Ports Ray takes unless told otherwise (the issue that motivated this module saw the first three).
RAY_FIXED_PORTS = (44217, 44227, 52365, 8265, 10001)
RAY_MAIN = "from ray.scripts.scripts import main; main()"  # the `ray` command, under this interpreter


class LocalRayError(RuntimeError):
    """A local node did not come up (the message ends with the tail of its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_env() -> dict[str, str]:
    """Environment for a Ray process on the loopback: with Ray's cluster mode off, ``127.0.0.1`` stays
    the node address (on, Ray replaces it with the machine's external address and cannot reach the
    servers bound to the loopback); metrics servers on free ports instead of 44217 and 44227."""
    return {
        **TELEMETRY_OFF,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "AUTOSCALER_METRIC_PORT": str(free_port()),
        "DASHBOARD_METRIC_PORT": str(free_port()),
    }


@dataclass
class LocalNode:
    """One ``ray start --block`` process and its process group (the node's raylet, GCS, agents, workers)."""

    process: subprocess.Popen[bytes]
    temp_dir: Path
    gcs_address: str  # HOST:PORT of the cluster's GCS (the head's)
    head: bool
    auth_env: dict[str, str]  # RAY_AUTH_MODE=token and the cluster's RAY_AUTH_TOKEN: what a client needs
    dashboard_address: str | None = None  # http://127.0.0.1:PORT of the job API (heads started with it)

    @property
    def log_path(self) -> Path:
        return self.temp_dir / "ray-start.log"

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL every process of the node at once: what a machine that drops off the network does."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, *, grace: float = 10.0, keep_files: bool = False) -> None:
        """Stop the node: SIGTERM to ``ray start`` (its reaper then stops the group), SIGKILL to the
        group after ``grace`` seconds; the temporary directory goes too unless ``keep_files``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        _kill_group(self.process.pid, grace)
        if self.process.poll() is None:
            self.process.wait(timeout=30)
        if not keep_files:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def _kill_group(pgid: int, grace: float) -> None:
    """Wait up to ``grace`` seconds for the process group to empty, then SIGKILL what is left of it."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the process that started it dies (Linux)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_head(
    *,
    num_cpus: int | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    job_api: bool = False,
    env: dict[str, str] | None = None,
    die_with_parent: bool = True,
    timeout: float = 180.0,
) -> LocalNode:
    """Start a head node on 127.0.0.1 (with the job API when ``job_api``); returns once it answers.

    The cluster uses token authentication with a fresh token (``node.auth_env`` lets a client in);
    ``env`` adds to this process's environment; ``RAY_ADDRESS`` is never passed on. With
    ``die_with_parent`` the node stops when the *thread* that started it ends (Linux's parent-death
    signal follows the thread): start it from the main thread, or pass False and stop it yourself.
    """
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    dashboard_port = free_port()
    args = [
        "--head",
        f"--port={free_port()}",
        f"--include-dashboard={'true' if job_api else 'false'}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={free_port()}",
    ]
    node = _start(args, num_cpus, num_gpus, resources, {**auth, **(env or {})}, die_with_parent, timeout)
    if job_api:
        node.dashboard_address = f"http://127.0.0.1:{dashboard_port}"
    return node


def start_worker(
    head: LocalNode,
    *,
    num_cpus: int | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    env: dict[str, str] | None = None,
    die_with_parent: bool = True,
    timeout: float = 180.0,
) -> LocalNode:
    """Start a worker node on 127.0.0.1 that joins the cluster of ``head``."""
    args = [f"--address={head.gcs_address}"]
    env = {**head.auth_env, **(env or {})}
    return _start(args, num_cpus, num_gpus, resources, env, die_with_parent, timeout)


def _start(
    args: list[str],
    num_cpus: int | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    env: dict[str, str] | None,
    die_with_parent: bool,
    timeout: float,
) -> LocalNode:
    import json

    # short: Ray's socket paths under it must fit in 107 bytes
    temp_dir = Path(tempfile.mkdtemp(prefix="mh-ray-", dir="/tmp"))
    command = [
        sys.executable,
        "-c",
        RAY_MAIN,
        "start",
        *args,
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        "--min-worker-port=0",  # workers bind ports the OS picks (default: a fixed range from 10002)
        "--max-worker-port=0",
    ]
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        command.append(f"--num-gpus={num_gpus:g}")
    if resources:
        command.append(f"--resources={json.dumps(resources)}")
    full_env = {**os.environ, **loopback_env(), **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    log = open(temp_dir / "ray-start.log", "wb")  # noqa: SIM115 - the child holds it; closed here below
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
        start_new_session=True,  # its own process group: stopped (or killed) as one
        preexec_fn=_die_with_parent if die_with_parent else None,
    )
    log.close()
    auth_env: dict[str, str] = {k: full_env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN") if k in full_env}
    node = LocalNode(process, temp_dir, gcs_address="", head="--head" in args, auth_env=auth_env)
    # `ray start` writes the cluster's address to <temp dir>/ray_current_cluster once its node is up
    address_file = temp_dir / "ray_current_cluster"
    deadline = time.monotonic() + timeout
    while not (address_file.is_file() and address_file.read_text().strip()):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = node.log_path.read_text(errors="replace")[-3000:]
            node.stop(grace=5, keep_files=True)
            why = "exited" if process.poll() is not None else f"not up after {timeout:.0f} s"
            raise LocalRayError(f"a local Ray node {why} (log {node.log_path}):\n{tail}")
        time.sleep(0.2)
    node.gcs_address = address_file.read_text().strip()
    return node
