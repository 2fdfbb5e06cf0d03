"""`study submit`, `study jobs`, `study logs`: a hunt as a Ray job, through the cluster's job API."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime
from typing import Any

from study.errors import UsageError

ADDRESS_HELP = "the cluster's job API, e.g. http://127.0.0.1:8265 (default: $RAY_ADDRESS)"


def _client(args: argparse.Namespace) -> Any:
    from study.dispatch.jobs import ClusterError, connect

    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise UsageError("no cluster address: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    try:
        client = connect(address)
    except ClusterError as exc:
        raise UsageError(str(exc)) from None
    # Ray's job SDK logs every upload and websocket at INFO (set on import): the commands print what matters
    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return client


def cmd_submit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from study.dispatch.jobs import ClusterError, default_results, hunt_job, new_job_id, project_root, submit
    from study.spec import PipelineError, load_pipeline

    for flag in ("trials", "runs_per_trial"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    try:
        spec = load_pipeline(args.pipeline)  # fail here, not on the cluster
    except PipelineError as exc:
        raise UsageError(str(exc)) from None
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    storage = args.storage or os.environ.get("MINIMA_HUNT_STORAGE")
    client = _client(args)
    job_id = new_job_id(spec.name)
    results = Path(args.results).expanduser().absolute() / job_id if args.results else default_results(job_id)
    try:
        job = hunt_job(
            spec.name,
            Path(args.pipeline).read_text(),
            working_dir=project_root(),
            results=results,
            submission_id=job_id,
            tracking_uri=tracking_uri,
            storage=storage,
            trials=args.trials,
            runs_per_trial=args.runs_per_trial,
        )
        job_id = submit(client, job)
    except ClusterError as exc:
        raise UsageError(str(exc)) from None
    stores = [f"MLflow {tracking_uri}" if tracking_uri else "", f"Optuna {storage}" if storage else ""]
    also = ", ".join(s for s in stores if s)
    print(f"results: {job.results} on the head" + (f" (and {also})" if also else ""), file=sys.stderr)
    print(job_id)
    address = args.address or os.environ.get("RAY_ADDRESS")
    print(f"follow it: study logs {job_id} --address {address} --follow", file=sys.stderr)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from study.dispatch.jobs import ClusterError, list_jobs

    try:
        jobs = list_jobs(_client(args))
    except ClusterError as exc:
        raise UsageError(str(exc)) from None
    if not jobs:
        print("no jobs")
        return 0
    rows = [("JOB", "STATUS", "STARTED", "ENTRYPOINT")]
    for job in jobs:
        started = (
            datetime.fromtimestamp(job.start_time / 1000).strftime("%Y-%m-%d %H:%M:%S")
            if job.start_time
            else "-"
        )
        rows.append((job.job_id, job.status, started, job.entrypoint))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)), row[3])
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from study.dispatch.jobs import ClusterError, follow_logs, job_logs

    client = _client(args)
    try:
        if args.follow:

            def write(chunk: str) -> None:
                sys.stdout.write(chunk)
                sys.stdout.flush()

            status = follow_logs(client, args.job, write)
            print(f"\njob {args.job}: {status}", file=sys.stderr)
            return 0 if status == "SUCCEEDED" else 1
        sys.stdout.write(job_logs(client, args.job))
    except ClusterError as exc:
        raise UsageError(str(exc)) from None
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("submit", help="run a hunt as a Ray job on a cluster; prints the job id")
    p.add_argument("pipeline", help="a pipeline YAML file (validated here, its text travels with the job)")
    p.add_argument("--address", default=None, help=ADDRESS_HELP)
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI as seen from the cluster ($MLFLOW_TRACKING_URI)",
    )
    p.add_argument(
        "--storage", default=None, help="Optuna storage URL as seen from the cluster ($MINIMA_HUNT_STORAGE)"
    )
    p.add_argument(
        "--results",
        default=None,
        help="folder on the head for the job's results, one subfolder per job "
        "(default: $MINIMA_HUNT_RESULTS or ~/minima-hunt/jobs)",
    )
    p.add_argument("--trials", type=int, default=None, help="total finished trials wanted")
    p.add_argument("--runs-per-trial", type=int, default=None)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("jobs", help="list the cluster's jobs: id, status, start, entrypoint")
    p.add_argument("--address", default=None, help=ADDRESS_HELP)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("logs", help="print a job's log (--follow: until it ends)")
    p.add_argument("job", help="a job id printed by study submit / study jobs")
    p.add_argument("--address", default=None, help=ADDRESS_HELP)
    p.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    p.set_defaults(func=cmd_logs)
