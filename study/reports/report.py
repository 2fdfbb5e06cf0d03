"""The study report of a hunt folder: ``OUT/report/`` with summary.md, runs.csv and plots, plus what the
hunt's landscape adds (:mod:`study.reports.extension`; teacher-student: families.csv and family plots),
optionally logged to the hunt's parent MLflow run under ``report/``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.record import CLASSES, PARAM_PREFIX, CriticalPoint
from study.record import is_certified_spurious as certified_spurious
from study.record.files import read_csv
from study.reports import plots
from study.reports.account import account_section
from study.reports.extension import LandscapeReport, landscape_report
from study.reports.hunt import HuntFolder, load_hunt
from study.reports.summary import (
    completed,
    hunt_record,
    objective_columns,
    pareto_front,
    summary_markdown,
)
from study.reports.tables import (
    basin_table,
    configuration_table,
    interval_text,
    markdown_table,
    width_column,
)


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote (``files``: every file, the summary first) and its markdown."""

    out: Path
    folder: Path
    summary: Path
    files: tuple[Path, ...]
    markdown: str


def build_report(out_dir: Path, *, fixed: dict[str, Any] | None = None) -> Report:
    """Read a hunt folder (runs.csv + trials/*.npz) and write ``out_dir/report/``.

    ``fixed``: the pipeline's fixed landscape values, needed for families only when k or n is not a
    searched parameter (default: as the driver recorded them in ``out_dir/hunt.json``).
    """
    hunt = load_hunt(Path(out_dir))
    folder = hunt.out / "report"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.png"):  # plots a previous report drew may not apply any more
        old.unlink()
    runs = hunt.runs
    lines = [f"# Report: {hunt.name}", ""]
    lines.append(
        f"Hunt folder `{hunt.out}`; landscape `{hunt.landscape}`; {len(runs)} runs in "
        f"{runs['trial'].nunique() if 'trial' in runs else 0} trials."
    )
    files: list[Path] = []
    written: list[Path] = []

    runs_path = folder / "runs.csv"
    runs.drop(columns=["array_file", "array_row"]).to_csv(runs_path, index=False)
    files.append(runs_path)

    extras = landscape_report(hunt.landscape)
    state, data_files = extras.prepare(hunt, fixed, folder)
    files += data_files

    if len(runs) == 0:
        lines += ["", "No runs yet: nothing to summarize."]
    else:
        written += _configurations_section(hunt, extras, state, lines, folder)
        written += extras.sections(hunt, state, lines, folder)
        written += _basin_section(hunt, extras, lines, folder)
        written += extras.late_sections(hunt, lines, folder)
    written += _hunt_summary_section(hunt, lines, folder)
    lines += account_section(hunt.out)
    if written:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in written]
    markdown = "\n".join(lines) + "\n"
    summary = folder / "summary.md"
    summary.write_text(markdown)
    return Report(hunt.out, folder, summary, (summary, *files, *written), markdown)


# ---- sections --------------------------------------------------------------------------------------
def _hunt_summary_section(hunt: HuntFolder, lines: list[str], folder: Path) -> list[Path]:
    """The hunt summary (study.reports.summary), one heading level down, and for several objectives
    the Pareto plot of the completed trials."""
    text = summary_markdown(hunt.out)
    lines.append("")
    lines += [f"#{line}" if line.startswith("#") else line for line in text.splitlines()]
    record = hunt_record(hunt.out)
    directions = list(record.get("directions", []))
    objectives = str(record.get("objective", "")).split(",")
    trials = read_csv(hunt.out / "trials.csv")
    columns = objective_columns(trials, objectives) if trials is not None else None
    if len(directions) < 2 or trials is None or columns is None:
        return []
    done = completed(trials, columns)
    if not len(done):
        return []
    values = done[columns[:2]].set_axis(objectives[:2], axis=1)
    front = pareto_front(done[columns], directions)
    return [plots.pareto_plot(values, front, folder / "pareto_front.png")]


def _configurations_section(
    hunt: HuntFolder, extras: LandscapeReport, state: Any, lines: list[str], folder: Path
) -> list[Path]:
    table = extras.configurations(hunt, state, configuration_table(hunt))
    shown = table.drop(columns=["rate", "rate_low", "rate_high"])
    shown.insert(
        shown.columns.get_loc("certified_spurious") + 1,
        "rate [95% CI]",
        [
            interval_text(r, lo, hi)
            for r, lo, hi in zip(table["rate"], table["rate_low"], table["rate_high"], strict=True)
        ],
    )
    empty = [c for c in CLASSES[2:] if c in shown and shown[c].sum() == 0]
    shown = shown.drop(columns=empty)
    lines += ["", "## Configurations", ""]
    lines.append(
        "Runs per class; `certified_spurious` counts spurious minima backed by a certificate, and its rate "
        "carries a 95% Wilson interval; `lowest_spurious_loss` is over certified ones."
        + (f" Classes with no run left out: {', '.join(empty)}." if empty else "")
    )
    lines += ["", markdown_table(shown)]
    total = int(certified_spurious(hunt.runs).sum())
    spurious_any = int((hunt.runs["critical_point"] == CriticalPoint.SPURIOUS_MINIMUM).sum())
    lines.append("")
    if total == 0:
        lines.append(
            f"No certified spurious minimum in this hunt ({spurious_any} uncertified spurious "
            f"minima among {len(hunt.runs)} runs)."
        )
    else:
        lines.append(f"{total} certified spurious minima among {len(hunt.runs)} runs.")
    return extras.configuration_plots(hunt, table, folder)


def _basin_section(hunt: HuntFolder, extras: LandscapeReport, lines: list[str], folder: Path) -> list[Path]:
    table = basin_table(hunt)
    if table.empty:
        return []
    lines += ["", "## Basin quality (L4)", ""]
    lines.append(
        "`reached`: fraction of runs ending at a global minimum (95% Wilson interval); `monotone`: fraction "
        "whose loss never rises along the straight line from initialization to end point; `bump_*`: "
        "quantiles of the largest rise along that line."
    )
    shown = table.drop(columns=["reached", "reached_low", "reached_high"])
    shown.insert(
        shown.columns.get_loc("runs") + 1,
        "reached [95% CI]",
        [
            interval_text(r, lo, hi)
            for r, lo, hi in zip(table["reached"], table["reached_low"], table["reached_high"], strict=True)
        ],
    )
    lines += ["", markdown_table(shown)]
    params = [c.removeprefix(PARAM_PREFIX) for c in hunt.param_columns]
    axis = extras.basin_axis(table)
    if axis is not None:
        table, x, line_keys, xlabel = axis
    else:
        width = width_column(hunt)
        if width is None:
            return []
        x = width.removeprefix(PARAM_PREFIX)
        line_keys = [p for p in params if p != x and table[p].nunique() > 1]
        xlabel = x
    if table[x].nunique() < 2:
        return []
    return [plots.basin_plot(table, x, line_keys, folder / "basin_vs_width.png", xlabel=xlabel)]
