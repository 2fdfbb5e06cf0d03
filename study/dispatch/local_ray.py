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
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from study.telemetry import TELEMETRY_OFF

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
    """One node: the process that started it and its session (the node's raylet, GCS, agents, workers)."""

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
        _signal_session(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def pids(self) -> list[int]:
        """The node's processes: its session (Ray's workers each lead a process group of their own)."""
        return session_pids(self.process.pid)

    def stop(self, *, grace: float = 10.0, keep_files: bool = False) -> None:
        """Stop the node: SIGTERM to ``ray start`` (its reaper then stops the group), SIGKILL to the
        group after ``grace`` seconds; the temporary directory goes too unless ``keep_files``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        _kill_session(self.process.pid, grace)
        if self.process.poll() is None:
            self.process.wait(timeout=30)
        if not keep_files:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def session_pids(sid: int) -> list[int]:
    """Processes of the session ``sid`` (Linux: from /proc; elsewhere the process group ``sid``)."""
    if not os.path.isdir("/proc"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, 0)
            return [sid]
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == sid:
                    found.append(int(entry))
    return found


def _signal_session(sid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signum)
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _kill_session(sid: int, grace: float) -> None:
    """Wait up to ``grace`` seconds for the session's processes to end, then SIGKILL what is left."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not session_pids(sid):
            return
        time.sleep(0.2)
    _signal_session(sid, signal.SIGKILL)


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

    def attempt() -> LocalNode:
        dashboard_port = free_port()
        args = [
            "--head",
            f"--port={free_port()}",
            f"--include-dashboard={'true' if job_api else 'false'}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            f"--ray-client-server-port={free_port()}",
        ]
        env_all = {**auth, **(env or {})}
        node = _start(args, num_cpus, num_gpus, resources, env_all, die_with_parent, timeout)
        if job_api:
            node.dashboard_address = f"http://127.0.0.1:{dashboard_port}"
        return node

    return _retried(attempt)


def _retried(attempt: Callable[[], LocalNode], attempts: int = 3) -> LocalNode:
    """A node that did not come up is started again on fresh ports: a port the OS gave us may be
    taken by a neighbour before the node binds it, and an overloaded machine can miss Ray's own
    start-up deadlines."""
    for remaining in range(attempts - 1, -1, -1):
        try:
            return attempt()
        except LocalRayError:
            if not remaining:
                raise
    raise AssertionError("unreachable")


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
    """Start a worker node on 127.0.0.1 that joins the cluster of ``head`` (a second "machine" for
    tests and for trying a cluster on one computer).

    ``ray start --address`` refuses to start a worker with Ray's cluster mode off, and with it on moves
    the node to the machine's external address, where the loopback-bound head cannot be reached; so the
    node is started the way Ray's own ``ray.cluster_utils.Cluster.add_node`` starts one."""
    params: dict[str, object] = {
        "gcs_address": head.gcs_address,
        "node_ip_address": "127.0.0.1",
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "resources": resources,
        "object_store_memory": 200 * 1024**2,  # results are small; several nodes share /dev/shm
        "min_worker_port": 0,
        "max_worker_port": 0,
        "node_manager_port": 0,
    }

    def attempt() -> LocalNode:
        ports = {
            key: free_port()
            for key in (
                "dashboard_agent_listen_port",
                "metrics_agent_port",
                "runtime_env_agent_port",
                "metrics_export_port",
            )
        }
        command = [sys.executable, "-c", WORKER_MAIN, json.dumps({**params, **ports})]
        return _launch(command, {**head.auth_env, **(env or {})}, die_with_parent, timeout, head=False)

    return _retried(attempt)


# A worker node in its own process: the node's processes are its children (one process group); its
# address file says it is up; SIGTERM stops it (atexit), and its reaper stops the group if it dies.
WORKER_MAIN = """
import json, os, signal, sys, time
from ray._private.node import Node
from ray._private.parameter import RayParams
params = json.loads(sys.argv[1])
params["temp_dir"] = os.environ["MINIMA_HUNT_NODE_DIR"]
Node(RayParams(**params), head=False, shutdown_at_exit=True, spawn_reaper=True)
with open(os.path.join(params["temp_dir"], "ray_current_cluster"), "w") as f:
    f.write(params["gcs_address"])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


def _start(
    args: list[str],
    num_cpus: int | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    env: dict[str, str] | None,
    die_with_parent: bool,
    timeout: float,
) -> LocalNode:
    """``ray start --block`` with ``args`` and free ports for everything else."""
    command = [
        sys.executable,
        "-c",
        RAY_MAIN,
        "start",
        *args,
        "--block",
        "--node-ip-address=127.0.0.1",
        "--temp-dir={MINIMA_HUNT_NODE_DIR}",
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
    return _launch(command, env, die_with_parent, timeout, head="--head" in args)


def _launch(
    command: list[str], env: dict[str, str] | None, die_with_parent: bool, timeout: float, *, head: bool
) -> LocalNode:
    """Run ``command`` (``{MINIMA_HUNT_NODE_DIR}`` in it: the node's new temporary directory) in a
    process group of its own; returns once the node has written its address file there."""
    # short: Ray's socket paths under it must fit in 107 bytes
    temp_dir = Path(tempfile.mkdtemp(prefix="mh-ray-", dir="/tmp"))
    try:
        return _launch_in(temp_dir, command, env, die_with_parent, timeout, head=head)
    except BaseException:  # a node that did not come up (or an interrupt) leaves no folder behind
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def _launch_in(
    temp_dir: Path,
    command: list[str],
    env: dict[str, str] | None,
    die_with_parent: bool,
    timeout: float,
    *,
    head: bool,
) -> LocalNode:
    command = [part.replace("{MINIMA_HUNT_NODE_DIR}", str(temp_dir)) for part in command]
    full_env = {**os.environ, **loopback_env(), **(env or {}), "MINIMA_HUNT_NODE_DIR": str(temp_dir)}
    full_env.pop("RAY_ADDRESS", None)
    log = open(temp_dir / "ray-start.log", "wb")  # noqa: SIM115 - the child holds it; closed here below
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
        start_new_session=True,  # its own session: stopped (or killed) as one
        preexec_fn=_die_with_parent if die_with_parent else None,
    )
    log.close()
    auth_env: dict[str, str] = {k: full_env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN") if k in full_env}
    node = LocalNode(process, temp_dir, gcs_address="", head=head, auth_env=auth_env)
    # the node (`ray start`, or WORKER_MAIN) writes the cluster address to <temp dir>/ray_current_cluster
    # once it is up
    address_file = temp_dir / "ray_current_cluster"
    deadline = time.monotonic() + timeout
    try:
        while not (address_file.is_file() and address_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = node.log_path.read_text(errors="replace")[-3000:]
                why = "exited" if process.poll() is not None else f"not up after {timeout:.0f} s"
                raise LocalRayError(f"a local Ray node {why} ({temp_dir} removed); its log ends:\n{tail}")
            time.sleep(0.2)
    except BaseException:
        node.stop(grace=5)  # its processes, and its folder
        raise
    node.gcs_address = address_file.read_text().strip()
    return node
