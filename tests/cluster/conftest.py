"""Real servers on 127.0.0.1 for the cluster tests: PostgreSQL (started outside, by `make services`), an
MLflow tracking server, a Ray head with its job API; each test stops what it starts."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# `make services` starts this server (infra/postgres/start-local.sh); the URL has no database name
PG_URL = os.environ.get("MINIMA_HUNT_TEST_PG", "postgresql+psycopg2://minima:minima@127.0.0.1:55432")

TINY = {
    "landscape": "teacher_student",
    "search": {"k": {"type": "int", "low": 3, "high": 4}},
    "derived": {"n": "k"},
    "train": {"tol": 1.0e-7, "max_steps": 20000},
    "runs_per_trial": 4,
    "chunk_size": 2,
    "trials": 2,
    "sampler": "random",
}


def tiny_pipeline(prefix: str, **changes: object) -> dict:
    """A tiny teacher-student pipeline (k in 3..4, n = k) with a name no earlier run has used."""
    return {"name": f"{prefix}_{uuid.uuid4().hex[:8]}", **TINY, **changes}


@functools.cache
def postgres_down_reason() -> str | None:
    """None when the test server answers, else why not (checked once per session)."""
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 is not installed"
    dsn = PG_URL.replace("postgresql+psycopg2://", "postgresql://", 1) + "/optuna_test"
    try:
        psycopg2.connect(dsn, connect_timeout=3).close()
    except psycopg2.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no PostgreSQL at {PG_URL} (run `make services`): {first}"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("postgres") is not None:
        reason = postgres_down_reason()
        if reason is not None:
            pytest.skip(reason)


@pytest.fixture
def pg_url() -> str:
    """The test server's URL without a database (append /optuna_test or /mlflow_test)."""
    return PG_URL


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port on 127.0.0.1 where a real socket accepts TCP connections and never says a word (what a
    Ray address that names some other service, or a stalled one, looks like to a client)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # the kernel completes each handshake; nobody reads or writes
        yield int(sock.getsockname()[1])


def wait_for_mlflow(server: subprocess.Popen, url: str, log_path: Path, what: str) -> None:
    """Poll ``url``/health until an MLflow server answers OK; fail with its log if it exits or takes
    over 120 s (the first start migrates an empty database)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.read().strip() == b"OK":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not come up:\n{log_path.read_text()}")
        time.sleep(0.5)


def stop_process_group(server: subprocess.Popen) -> None:
    """Stop a server started with ``start_new_session=True`` and its workers (one process group)."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
