"""`study hunt`, `study report`, `study submit`, `study jobs`, `study logs`: thin command layers."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from study.errors import UsageError


def _usage_error(message: str) -> Exception:
    return UsageError(message)


def cmd_hunt(args: argparse.Namespace) -> int:
    import pandas as pd

    from study.progress import library_logs
    from study.search.driver import HuntOptions, check_inputs, run_hunt
    from study.search.identity import HuntInputError
    from study.search.samplers import dashboard_command
    from study.spec import PipelineError, load_pipeline, spec_warnings
    from study.tracking.mlflow_sink import default_tracking_uri

    library_logs(verbose=args.verbose, quiet=args.quiet)

    try:
        spec = load_pipeline(args.pipeline, args.overrides)
    except PipelineError as exc:
        raise _usage_error(str(exc)) from None
    for flag in ("trials", "runs_per_trial"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise _usage_error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    deadline = budget_deadline(args.hours, args.until, now=time.time())
    out = Path(args.out or f"runs/{spec.name}")
    storage = args.storage or os.environ.get("MINIMA_HUNT_STORAGE")
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    options = HuntOptions(
        out=out,
        storage=storage,
        tracking_uri=tracking_uri,
        address=args.address,
        trials=args.trials,
        runs_per_trial=args.runs_per_trial,
        progress=not args.quiet,
        deadline=deadline,
    )
    try:  # memory, store URLs, the Ray address, servers, folders: the one line, before any warning
        check_inputs(spec, options)
    except HuntInputError as exc:
        raise _usage_error(str(exc)) from None
    for warning in spec_warnings(spec, trials=args.trials, budgeted=deadline is not None):
        print(f"study: warning: {warning}", file=sys.stderr)
    print(
        f"hunt {spec.name}: {spec.landscape}, objective {', '.join(spec.objective)}, "
        f"sampler {spec.sampler}, results in {out}"
    )
    try:
        table = run_hunt(spec, options)
    except HuntInputError as exc:
        raise _usage_error(str(exc)) from None
    except ConnectionError as exc:  # Ray address not reachable
        raise _usage_error(f"cannot reach the Ray cluster at {args.address!r}: {exc}") from None
    except Exception as exc:  # a storage or tracking URI that does not open
        kind = type(exc).__module__.split(".")[0]
        if kind in ("sqlalchemy", "optuna", "mlflow", "psycopg2"):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise _usage_error(f"storage or tracking store failed ({type(exc).__name__}): {first}") from None
        raise
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print()
        print(table.to_string(index=False) if len(table) else "no trials")
    summary = out / "summary.md"
    if summary.is_file():
        print()
        print(summary.read_text())
    uri = tracking_uri or default_tracking_uri(out)
    print(f"\nruns: {out / 'runs.csv'}   trials: {out / 'trials.csv'}   summary: {summary}")
    print_links(uri, spec.name)
    print(f"open the search: {dashboard_command(storage, out)}")
    failure = all_failed(table)
    if failure is not None:
        print(f"study: {failure}", file=sys.stderr)
        return 1
    return 0


def all_failed(table: Any) -> str | None:
    """When every finished trial of the hunt failed: one line with how many and the first one's reason."""
    if not len(table) or "state" not in table or not (table["state"] == "FAIL").all():
        return None
    first = table.sort_values("trial").iloc[0]
    reason = str(first.get("fail_reason") or "no reason recorded").strip().splitlines()
    return f"all {len(table)} trial(s) failed; trial {int(first['trial'])}: {reason[-1] if reason else ''}"


def budget_deadline(hours: float | None, until: str | None, *, now: float) -> float | None:
    """The wall-clock time (``time.time()`` scale) a hunt stops starting trials at: ``now + hours``,
    or ``until`` (``HH:MM[:SS]`` today in UTC, the next day if already past, or an ISO date-time;
    UTC unless it names a zone); the earlier of the two when both are given. UsageError if malformed."""
    import datetime as dt

    deadlines = []
    if hours is not None:
        if not (hours > 0 and math.isfinite(hours)):
            raise _usage_error(f"--hours must be a positive number, got {hours}")
        deadlines.append(now + hours * 3600.0)
    if until is not None:
        text = until.strip()
        utc = dt.UTC
        try:
            if "T" in text or "-" in text:
                when = dt.datetime.fromisoformat(text)
                when = when if when.tzinfo is not None else when.replace(tzinfo=utc)
            else:
                clock = dt.time.fromisoformat(text)
                today = dt.datetime.fromtimestamp(now, utc).date()
                when = dt.datetime.combine(today, clock, tzinfo=utc)
                if when.timestamp() <= now:
                    when += dt.timedelta(days=1)
        except ValueError:
            raise _usage_error(
                f"--until: expected HH:MM or an ISO date-time such as 2026-11-25T06:00, got {until!r}"
            ) from None
        if when.timestamp() <= now:
            raise _usage_error(f"--until {until} is already past")
        deadlines.append(when.timestamp())
    return min(deadlines) if deadlines else None


def print_links(tracking_uri: str, experiment: str) -> None:
    """How to open the runs in MLflow's UI, and the direct link to the counterexamples."""
    from study.tracking.links import counterexamples_link, ui_command

    command = ui_command(tracking_uri)
    if command is not None:
        print(f"open the runs:   {command}")
    link = counterexamples_link(tracking_uri, experiment)
    if link is not None:
        print(f"counterexamples: {link}")


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` (no progress bar, library warnings off) and ``-v`` (library INFO logs shown)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no library warnings")
    group.add_argument("-v", "--verbose", action="store_true", help="show the libraries' INFO logs")


def add_commands(sub: Any) -> None:
    p = sub.add_parser("hunt", help="run (or resume) a hunt from a pipeline file")
    p.add_argument("pipeline", help="a pipeline YAML file, e.g. pipelines/quickstart.yaml")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="FIELD=VALUE",
        help="change pipeline fields, validated like the file (e.g. train.lr=0.05 runs_per_trial=64)",
    )
    p.add_argument("--trials", type=int, default=None, help="total finished trials wanted")
    p.add_argument(
        "--hours",
        type=float,
        default=None,
        help="time budget: start trials for this long, then finish those in flight and stop",
    )
    p.add_argument(
        "--until", default=None, help="time budget: stop starting trials at HH:MM (UTC) or a date-time"
    )
    p.add_argument("--runs-per-trial", type=int, default=None)
    p.add_argument("--out", default=None, help="output folder (default runs/<name>)")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: local Ray)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite under --out)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite under --out)")
    add_output_flags(p)
    p.set_defaults(func=cmd_hunt)
