"""The hunt summary (``OUT/summary.md``): what was searched, how many runs, the best configurations,
and every re-verified counterexample, theorem contradiction candidates first.

Written by the driver when a hunt ends and included in ``study report``; it reads only the hunt folder
(``hunt.json``, ``trials.csv``, ``runs.csv``), so it describes an interrupted hunt just as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from study.record import PARAM_PREFIX, VERDICTS, atomic_write, is_certified_spurious, read_runs_table
from study.record.files import read_csv
from study.reports.hunt import hunt_record
from study.reports.tables import markdown_table

BEST_SHOWN = 5
COUNTEREXAMPLES_SHOWN = 50


def _space(search: list[dict[str, Any]]) -> str:
    parts = []
    for p in search:
        if p.get("kind") == "categorical":
            parts.append(f"{p['name']} in {list(p.get('choices', []))}")
        else:
            scale = ", log" if p.get("log") else ""
            parts.append(f"{p['name']} in [{p.get('low')}, {p.get('high')}]{scale}")
    return "; ".join(parts) or "nothing (one configuration)"


def pareto_front(values: pd.DataFrame, directions: list[str]) -> pd.Series:
    """Boolean per row: no other row is at least as good in every objective and better in one."""
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    scores = values.to_numpy(dtype=float) * signs  # (T, M): larger is better
    front = []
    for row in scores:
        dominated = ((scores >= row).all(axis=1) & (scores > row).any(axis=1)).any()
        front.append(not dominated and bool(pd.notna(row).all()))
    return pd.Series(front, index=values.index)


def objective_columns(trials: pd.DataFrame, objectives: list[str]) -> list[str] | None:
    """The columns of ``trials.csv`` holding the objective values (named, or ``value_i`` in older
    tables); None when they are not all there."""
    for columns in (objectives, [f"value_{i}" for i in range(len(objectives))]):
        if columns and set(columns) <= set(trials.columns):
            return list(columns)
    return None


def completed(trials: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return trials[trials["state"] == "COMPLETE"].dropna(subset=columns)


def best_configurations(trials: pd.DataFrame, directions: list[str], objectives: list[str]) -> pd.DataFrame:
    """The best completed trials: the Pareto front for several objectives, else the top ``BEST_SHOWN``."""
    columns = objective_columns(trials, objectives) if len(trials) else None
    if columns is None:
        return pd.DataFrame()
    done = completed(trials, columns)
    if len(directions) > 1:
        best = done[pareto_front(done[columns], directions)]
    else:
        best = done.sort_values(columns[0], ascending=directions[0] == "minimize").head(BEST_SHOWN)
    return best.rename(columns=dict(zip(columns, objectives, strict=True)))


def counterexamples(runs: pd.DataFrame) -> pd.DataFrame:
    """Re-verified runs (any verdict), contradiction candidates first, then confirmed, then rejected;
    lowest loss first within each."""
    if "verdict" not in runs.columns or not len(runs):
        return pd.DataFrame()
    found = runs[runs["verdict"].notna() & (runs["verdict"].astype(str) != "")].copy()
    found["_order"] = found["verdict"].map({v: i for i, v in enumerate(VERDICTS)})
    return found.sort_values(["_order", "verified_loss"]).drop(columns="_order")


def summary_markdown(out: Path) -> str:
    """The summary of the hunt in ``out`` as markdown."""
    out = Path(out)
    record = hunt_record(out)
    trials = read_csv(out / "trials.csv")
    trials = trials if trials is not None else pd.DataFrame()
    try:
        runs = read_runs_table(out)
    except FileNotFoundError:
        runs = pd.DataFrame()
    objectives = str(record.get("objective", "")).split(",") if record.get("objective") else []
    directions = list(record.get("directions", []))
    lines = [f"# Hunt summary: {record.get('name', out.resolve().name)}", ""]

    lines += ["## What was searched", ""]
    if record:
        lines.append(
            f"- landscape `{record.get('landscape')}`; "
            f"objective {', '.join(objectives)} ({', '.join(directions)})"
        )
        lines.append(f"- space: {_space(record.get('search', []))}")
        if record.get("derived"):
            lines.append(f"- derived: {', '.join(f'{k} = {v}' for k, v in record['derived'].items())}")
        if record.get("fixed"):
            lines.append(f"- fixed: {', '.join(f'{k} = {v}' for k, v in record['fixed'].items())}")
        lines.append(
            f"- sampler `{record.get('sampler')}` {record.get('sampler_options', '')}; "
            f"pruner {record.get('pruner')}; repeats: {record.get('repeats')}"
        )
        if record.get("overrides"):
            lines.append(f"- command-line overrides: `{' '.join(record['overrides'])}`")
        budget = []
        if record.get("trials") is not None:
            budget.append(f"{record['trials']} trials")
        if record.get("deadline") is not None:
            budget.append(
                f"until {pd.Timestamp(record['deadline'], unit='s').strftime('%Y-%m-%d %H:%M:%S')} UTC"
            )
        lines.append(
            f"- budget: {' or '.join(budget) or 'none'}; stopped: {record.get('stopped', 'still running')}"
        )
    else:
        lines.append("- (no hunt.json: a hunt from before the summary existed)")

    lines += ["", "## How much", ""]
    states = trials["state"].value_counts().to_dict() if "state" in trials else {}
    by_state = ", ".join(f"{v} {k.lower()}" for k, v in sorted(states.items())) or "none"
    lines.append(f"- {len(trials)} trials ({by_state}); {len(runs)} runs trained")
    invocations = hunt_record(out, "hunt_stats.json").get("invocations") or []
    if len(invocations) > 1:
        total = sum(float(entry.get("wall_seconds") or 0.0) for entry in invocations)
        lines.append(f"- wall time {total / 3600:.3g} h over {len(invocations)} invocations of the driver")
    elif "started" in record and "finished" in record:
        lines.append(f"- wall time {(record['finished'] - record['started']) / 3600:.3g} h")
    if "critical_point" in runs:
        counts = runs["critical_point"].value_counts().to_dict()
        lines.append("- end points: " + ", ".join(f"{v} {k}" for k, v in counts.items()))

    lines += ["", "## Best configurations", ""]
    best = best_configurations(trials, directions, objectives) if objectives else pd.DataFrame()
    if len(best):
        keep = [c for c in best.columns if c not in ("fail_reason",)]
        if len(directions) > 1:
            lines.append(f"The Pareto front ({len(best)} trials):")
            lines.append("")
        lines.append(markdown_table(best[keep]))
    else:
        lines.append("No completed trial yet.")

    lines += ["", "## Re-verified counterexamples", ""]
    found = counterexamples(runs)
    if len(found):
        tally = found["verdict"].value_counts().to_dict()
        lines.append(
            "- "
            + ", ".join(f"{tally.get(v, 0)} {v.replace('_', ' ')}" for v in VERDICTS)
            + ' (MLflow: filter `tags.verdict = "confirmed"`)'
        )
        params = [c for c in found.columns if c.startswith(PARAM_PREFIX)]
        columns = [
            "verdict",
            "trial",
            "seed",
            *params,
            "family",
            "verified_loss",
            "verified_radius",
            "verdict_reason",
        ]
        shown = found[[c for c in columns if c in found.columns]].head(COUNTEREXAMPLES_SHOWN)
        lines.append("")
        lines.append(markdown_table(shown))
        if len(found) > COUNTEREXAMPLES_SHOWN:
            lines.append(
                f"\n... and {len(found) - COUNTEREXAMPLES_SHOWN} more in runs.csv (column `verdict`)."
            )
    else:
        certified = 0
        if {"critical_point", "certified"} <= set(runs.columns):
            certified = int(is_certified_spurious(runs).sum())
        lines.append(
            "None: no certified spurious minimum was found."
            if certified == 0
            else f"{certified} certified spurious minima, not re-verified (a hunt from before that)."
        )
    return "\n".join(lines) + "\n"


def write_summary(out: Path) -> Path:
    """Write ``OUT/summary.md``; returns its path."""
    text = summary_markdown(out)
    return atomic_write(Path(out) / "summary.md", lambda tmp: tmp.write_text(text))
