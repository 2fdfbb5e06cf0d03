"""`study report`: the study report of a hunt folder (a thin layer over study.reports.report)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from study.errors import UsageError


def hunt_folder(target: str) -> Path:
    """A hunt output folder, or a pipeline name looked up as runs/<name>; UsageError if neither."""
    path = Path(target)
    if path.is_dir():
        return path
    if path.exists():
        raise UsageError(f"not a hunt folder: {path}")
    named = Path("runs") / target
    if named.is_dir():
        return named
    if len(path.parts) > 1:
        raise UsageError(f"hunt folder not found: {path}")
    raise UsageError(f"no hunt folder {path} and no runs/{target} for a pipeline named {target!r}")


def cmd_report(args: argparse.Namespace) -> int:
    from study.cli_hunt import print_links
    from study.progress import library_logs
    from study.reports.hunt import hunt_name
    from study.reports.report import build_report
    from study.tracking.mlflow_sink import default_tracking_uri, log_report

    library_logs(verbose=args.verbose, quiet=args.quiet)
    out = hunt_folder(args.target)
    refresh_table(out)
    try:
        report = build_report(out)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(report.markdown)
    print("files written:")
    for path in report.files:
        print(f"  {path}")
    if not args.no_mlflow:
        tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        try:
            run_id = log_report(report, tracking_uri=tracking_uri)
        except LookupError as exc:
            print(f"study: report not logged to MLflow: {exc}", file=sys.stderr)
        else:
            print(f"logged to MLflow run {run_id} under report/")
            print_links(tracking_uri or default_tracking_uri(out), hunt_name(out))
    return 0


def refresh_table(out: Path) -> None:
    """``runs.csv`` rebuilt from the trial files when it is stale (a hunt killed before a trial's table
    append) and no driver is writing the folder; a note on stderr either way it matters."""
    from study.record import refresh_runs_table
    from study.search.identity import hunt_running

    if hunt_running(out):
        print(f"study: a hunt is running in {out}: its runs.csv may lag the trial files", file=sys.stderr)
        return
    rebuilt = refresh_runs_table(out)
    if rebuilt is not None:
        print(f"study: runs.csv was stale ({rebuilt[0]} runs; the trial files hold {rebuilt[1]}): rebuilt")


def cmd_sweep(args: argparse.Namespace) -> int:
    import pandas as pd

    from study.record import param_column, read_runs_table
    from study.reports.sweeps import grid_comparison, sweep_table
    from study.reports.tables import markdown_table

    if not 0 < args.confidence < 1:
        raise UsageError(f"--confidence must be in (0, 1), got {args.confidence}")
    frames = []
    for target in args.targets:
        try:
            frames.append(read_runs_table(hunt_folder(target)))
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from None
    runs = pd.concat(frames, ignore_index=True)
    if args.grid:
        if not {param_column("k"), param_column("n")} <= set(runs.columns):
            raise UsageError("--grid needs a teacher-student hunt (param_k and param_n columns)")
        print(markdown_table(grid_comparison(runs, confidence=args.confidence)))
    else:
        print(markdown_table(sweep_table(runs)))
    return 0


def add_commands(sub: Any) -> None:
    from study.cli_hunt import add_output_flags

    p = sub.add_parser("report", help="write a hunt's study report (tables, families, plots) and log it")
    p.add_argument("target", help="a hunt output folder, or a pipeline name (looked up as runs/<name>)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: OUT/mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="write the report files only")
    add_output_flags(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("sweep", help="per-configuration table of one or more hunts (hypotheses, kinks, grid)")
    p.add_argument("targets", nargs="+", help="hunt output folders (their runs are pooled)")
    p.add_argument("--grid", action="store_true", help="the Safran-Shamir (k, n) grid with Wilson intervals")
    p.add_argument("--confidence", type=float, default=0.99, help="interval level for --grid (default 0.99)")
    p.set_defaults(func=cmd_sweep)
