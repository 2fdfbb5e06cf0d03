"""Hunts as Ray jobs: submit one to a cluster's job API (``http://HEAD:8265``), list jobs, read logs.

A job carries the project directory as its ``working_dir`` (Ray puts it first on ``PYTHONPATH`` of the
driver and of every worker, so the cluster runs the submitted code even where the package is not
installed) and the pipeline's text in an environment variable: the file is validated here and the
same text runs there, wherever it lives on this machine. The job's driver is ``study hunt`` joining
the cluster (``--address auto``) and writing to the storages named here, as seen from the cluster.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import study
from study.telemetry import TELEMETRY_OFF

PIPELINE_ENV = "MINIMA_HUNT_PIPELINE_TEXT"
PROBE_SECONDS = 5.0  # how long the job API may take to answer its first request
# Never uploaded (Ray also skips what .gitignore lists); the upload is capped by Ray at 500 MiB.
EXCLUDES = [
    ".venv",
    ".git",
    "runs",
    "mlruns",
    "**/__pycache__",
    "*.egg-info",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "*.db",
]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class ClusterError(Exception):
    """The cluster cannot be reached, or refused a request (one line, for the user)."""


@dataclass(frozen=True)
class HuntJob:
    """Everything a hunt job needs: the Ray job API's ``submission_id``, ``entrypoint``, ``runtime_env``."""

    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any] = field(hash=False)
    results: str = ""  # the folder on the head the hunt writes to (its --out)


@dataclass(frozen=True)
class JobInfo:
    """One row of ``study jobs``."""

    job_id: str  # the submission id (or Ray's job id for a driver not started through the job API)
    status: str  # PENDING | RUNNING | STOPPED | SUCCEEDED | FAILED
    entrypoint: str
    start_time: int | None  # ms since the epoch
    end_time: int | None
    message: str


def project_root() -> Path:
    """The directory that holds the ``study`` package being run (an editable install or a checkout)."""
    root = Path(study.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise ClusterError(
            f"the study package at {root} is not a project checkout (no pyproject.toml): "
            "run study submit from a clone installed with `pip install -e .`"
        )
    return root


# The entrypoint runs under /bin/sh as a child of Ray's job supervisor, whose Python is the one that runs
# Ray on the head: found from where that process loaded Ray's core library (PREFIX/lib/pythonX.Y/
# site-packages/ray/_raylet.so -> PREFIX/bin/python), so an unactivated virtualenv works as well as an
# activated one; `python3` on PATH where /proc is not there to ask.
HEAD_PYTHON = (
    "py=; prefix=$(sed -n 's#^[^/]*\\(/.*\\)/lib/python[0-9.]*/[a-z]*-packages/ray/_raylet[^/]*[.]so$#\\1#p' "
    "/proc/$PPID/maps 2>/dev/null | head -n 1); "
    'for c in "$prefix/bin/python" "$prefix/bin/python3"; do '
    '[ -n "$prefix" ] && [ -x "$c" ] && py=$c && break; done; '
    '[ -n "$py" ] || py=$(command -v python3 || command -v python)'
)


def default_results(job_id: str) -> Path:
    """Where a job writes without a tracking server or storage: ``$MINIMA_HUNT_RESULTS/<job id>``, by
    default under the submitting user's home, ``~/minima-hunt/jobs/<job id>`` (a path on the head)."""
    root = os.environ.get("MINIMA_HUNT_RESULTS") or str(Path.home() / "minima-hunt" / "jobs")
    return Path(root).expanduser().absolute() / job_id


def new_job_id(pipeline_name: str) -> str:
    return f"hunt-{pipeline_name}-{uuid.uuid4().hex[:8]}"


def hunt_job(
    pipeline_name: str,
    pipeline_text: str,
    *,
    working_dir: Path,
    results: Path | None = None,
    tracking_uri: str | None = None,
    storage: str | None = None,
    trials: int | None = None,
    runs_per_trial: int | None = None,
    submission_id: str | None = None,
) -> HuntJob:
    """The job for one hunt: under the head's Python, its driver writes the pipeline text to
    ``<results>/<name>.yaml`` and runs ``study hunt`` on it with ``--out <results>``: a folder on the
    head that outlives the job (Ray deletes the job's working directory with its session)."""
    job_id = submission_id or new_job_id(pipeline_name)
    folder = str(results or default_results(job_id))
    path = f"{folder}/{pipeline_name}.yaml"
    hunt = ["-m", "study.cli", "hunt", path, "--address", "auto", "--out", folder]
    if trials is not None:
        hunt += ["--trials", str(trials)]
    if runs_per_trial is not None:
        hunt += ["--runs-per-trial", str(runs_per_trial)]
    entrypoint = (
        f"{HEAD_PYTHON}; mkdir -p {shlex.quote(folder)}"
        f" && printf '%s' \"${PIPELINE_ENV}\" > {shlex.quote(path)}"
        f' && exec "$py" {shlex.join(hunt)}'
    )
    env_vars = {
        **TELEMETRY_OFF,
        "OMP_NUM_THREADS": "1",
        # the driver's ray.init passes its own env_vars (the same telemetry keys): combine them with the
        # job's instead of refusing to start
        "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1",
        PIPELINE_ENV: pipeline_text,
    }
    if tracking_uri:
        env_vars["MLFLOW_TRACKING_URI"] = tracking_uri
    if storage:
        env_vars["MINIMA_HUNT_STORAGE"] = storage
    runtime_env = {"working_dir": str(working_dir), "excludes": list(EXCLUDES), "env_vars": env_vars}
    return HuntJob(submission_id=job_id, entrypoint=entrypoint, runtime_env=runtime_env, results=folder)


def connect(address: str) -> Any:
    """A ``JobSubmissionClient`` for the job API at ``address`` (``http://HEAD:8265``; a bare
    ``HEAD:8265`` means http)."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    if "://" not in address:
        address = f"http://{address}"
    check_job_api(address)  # Ray's client waits without a timeout on a port that does not answer
    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except AuthenticationError as exc:
        raise ClusterError(
            f"the Ray job API at {address} wants a token: {_one_line(exc)} "
            "(set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token)"
        ) from None
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ClusterError(f"cannot reach the Ray job API at {address}: {_one_line(exc)}") from None


def check_job_api(address: str, *, timeout: float = PROBE_SECONDS) -> None:
    """Raise :class:`ClusterError` unless ``address`` answers ``GET /api/version`` as Ray's job API does
    (JSON with ``ray_version``, or a refusal for want of a token) within ``timeout`` seconds."""
    import http.client
    import json
    import urllib.error
    import urllib.request

    url = f"{address.rstrip('/')}/api/version"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            answer = json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return  # Ray's, asking for a token: connect() says so
        why = f"HTTP {exc.code} for /api/version"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        why = f"no answer within {timeout:g} s" if "timed out" in str(exc) else _one_line(exc)
    else:
        if isinstance(answer, dict) and "ray_version" in answer:
            return
        why = "/api/version does not name a Ray version"
    raise ClusterError(f"cannot reach the Ray job API at {address}: {why}")


def auth_headers() -> dict[str, str]:
    """The ``authorization`` header for a cluster with token authentication (Ray >= 2.5x), as
    ``ray.init`` sends it: unless ``RAY_AUTH_MODE=disabled``, the token from ``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` when there is one."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    try:
        from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]
    except ImportError:  # a Ray without token authentication
        return {}
    loader = AuthenticationTokenLoader.instance()
    if not loader.has_token(ignore_auth_mode=True):
        return {}
    return dict(loader.get_token_for_http_header())


def submit(client: Any, job: HuntJob) -> str:
    """Submit ``job``; returns its submission id."""
    try:
        return str(
            client.submit_job(
                entrypoint=job.entrypoint, submission_id=job.submission_id, runtime_env=job.runtime_env
            )
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"the cluster refused the job: {_one_line(exc)}") from None


def list_jobs(client: Any) -> list[JobInfo]:
    """Every job the cluster knows, oldest first."""
    try:
        details = client.list_jobs()
    except (ConnectionError, RuntimeError) as exc:
        raise ClusterError(f"cannot list jobs: {_one_line(exc)}") from None
    jobs = [
        JobInfo(
            job_id=d.submission_id or d.job_id or "",
            status=str(getattr(d.status, "value", d.status)),
            entrypoint=d.entrypoint,
            start_time=d.start_time,
            end_time=d.end_time,
            message=d.message or "",
        )
        for d in details
    ]
    return sorted(jobs, key=lambda j: j.start_time or 0)


def job_status(client: Any, job_id: str) -> str:
    try:
        return str(getattr(client.get_job_status(job_id), "value", ""))
    except RuntimeError as exc:
        raise _job_error(job_id, exc) from None


def job_logs(client: Any, job_id: str) -> str:
    """Everything the job's driver has printed so far."""
    try:
        return str(client.get_job_logs(job_id))
    except RuntimeError as exc:
        raise _job_error(job_id, exc) from None


def follow_logs(client: Any, job_id: str, write: Callable[[str], None]) -> str:
    """Pass the job's log to ``write`` as it grows, until the job ends; returns its final status."""
    job_status(client, job_id)  # an unknown job fails here, in one line

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(tail())
    except RuntimeError as exc:
        raise _job_error(job_id, exc) from None
    return job_status(client, job_id)


def _job_error(job_id: str, exc: BaseException) -> ClusterError:
    text = str(exc)
    if "404" in text or "does not exist" in text:
        return ClusterError(f"no job {job_id!r} on this cluster (see `study jobs`)")
    return ClusterError(f"job {job_id}: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:500] if lines else type(exc).__name__
