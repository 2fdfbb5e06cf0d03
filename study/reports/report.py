"""The study report of a hunt folder: ``OUT/report/`` with summary.md, runs.csv, families.csv and plots,
optionally logged to the hunt's parent MLflow run under ``report/``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study.diagnostics.critical import CLASSES
from study.landscapes.teacher_student_families import FAMILY_COLUMNS
from study.record.files import read_csv
from study.reports import plots
from study.reports.hunt import HuntFolder, load_hunt
from study.reports.summary import (
    completed,
    hunt_record,
    objective_columns,
    pareto_front,
    summary_markdown,
)
from study.reports.tables import (
    baseline_gaps,
    basin_table,
    certified_spurious,
    classification_table,
    configuration_table,
    families_table,
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
    searched parameter (default: read from the hunt's MLflow run in ``out_dir/mlflow.db`` if present).
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

    families = pd.DataFrame(columns=list(FAMILY_COLUMNS))
    notes: list[str] = []
    if hunt.landscape == "teacher_student" and len(runs):
        needs_fixed = not {"param_k", "param_n"} <= set(runs.columns)
        if fixed is None and needs_fixed:
            fixed = _fixed_from_mlflow(hunt)
        families, notes = families_table(hunt, fixed)
    families_path = folder / "families.csv"
    families.to_csv(families_path, index=False)
    files.append(families_path)

    if len(runs) == 0:
        lines += ["", "No runs yet: nothing to summarize."]
    else:
        written += _configurations_section(hunt, families, lines, folder)
        if hunt.landscape == "teacher_student":
            written += _families_section(hunt, families, notes, lines, folder)
        written += _basin_section(hunt, lines, folder)
        written += _classification_section(hunt, lines, folder)
    written += _hunt_summary_section(hunt, lines, folder)
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
    hunt: HuntFolder, families: pd.DataFrame, lines: list[str], folder: Path
) -> list[Path]:
    teacher_student = hunt.landscape == "teacher_student"
    table = configuration_table(hunt, families if teacher_student else None)
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
    spurious_any = int((hunt.runs["critical_point"] == "spurious_minimum").sum())
    lines.append("")
    if total == 0:
        lines.append(
            f"No certified spurious minimum in this hunt ({spurious_any} uncertified spurious "
            f"minima among {len(hunt.runs)} runs)."
        )
    else:
        lines.append(f"{total} certified spurious minima among {len(hunt.runs)} runs.")
    written: list[Path] = []
    if teacher_student and {"k", "n"} <= set(table.columns):
        per_kn = _pool(table, ["k", "n"])
        if per_kn["k"].nunique() >= 1 and len(per_kn) >= 2:
            written.append(plots.rate_vs_k_plot(per_kn, folder / "spurious_rate_vs_k.png"))
    return written


def _pool(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Configurations pooled over the columns other than ``keys`` (counts add up), with intervals."""
    from study.reports.tables import binomial_interval

    pooled = table.groupby(keys, as_index=False)[["runs", "certified_spurious"]].sum()
    pooled["rate"] = pooled["certified_spurious"] / pooled["runs"]
    bounds = [
        binomial_interval(c, r) for c, r in zip(pooled["certified_spurious"], pooled["runs"], strict=True)
    ]
    pooled["rate_low"] = [b[0] for b in bounds]
    pooled["rate_high"] = [b[1] for b in bounds]
    return pooled


def _families_section(
    hunt: HuntFolder, families: pd.DataFrame, notes: list[str], lines: list[str], folder: Path
) -> list[Path]:
    lines += ["", "## Families of certified spurious minima", ""]
    lines.append(
        "End points are grouped modulo permutations of student neurons and, for the identity teacher, of "
        "input coordinates with teachers: one family when the loss, the sorted Hessian spectrum and the "
        "sorted rows and columns of W agree within tolerances "
        "(`study.landscapes.teacher_student_families`). `n_large`: "
        "eigenvalues above 1 (the ones growing like k); `isotropy_rows`: most rows equal up to a "
        "permutation of coordinates; `row_cells`: sizes of the classes of rows that colour refinement "
        "cannot tell apart; `representative`: its row in runs.csv (0-based)."
    )
    for note in notes:
        lines += ["", f"- {note}"]
    if families.empty:
        lines += ["", "No families: no certified spurious minimum with stored end points."]
        return []
    shown = families[
        ["k", "n", "family", "loss", "runs", "lambda_min", "lambda_max", "eig_median", "n_large"]
        + ["isotropy_rows", "row_cells", "representative", "key"]
    ]
    lines += ["", markdown_table(shown)]
    l_star = float(hunt.runs["l_star"].median()) if "l_star" in hunt.runs else 0.0
    written = [plots.family_levels_plot(families, folder / "family_losses.png", l_star=l_star)]
    written += _spectra_plots(hunt, families, folder)
    return written


GLOBAL_SPECTRA_DRAWN = 40  # global-minimum spectra drawn per configuration (they nearly coincide)


def _spectra_panels(
    hunt: HuntFolder, families: pd.DataFrame
) -> list[tuple[int, int, int, int, np.ndarray, dict[str, np.ndarray]]]:
    """Per (k, n) with families: (k, n, global runs, spurious runs, global spectra drawn ``(G, P)``,
    family label -> representative spectrum), in order of k then n."""
    runs = hunt.runs
    panels = []
    for (k, n), chosen in families.groupby(["k", "n"], sort=True):
        same = runs.loc[chosen["representative"]]
        config = runs
        for column in hunt.param_columns:  # the representatives' configuration (first one's)
            config = config[config[column] == same[column].iloc[0]]
        global_rows = config[config["critical_point"] == "global_minimum"]
        drawn = global_rows.head(GLOBAL_SPECTRA_DRAWN)
        global_spectra = hunt.stacked(drawn, "eigenvalues") if len(drawn) else np.zeros((0, 0))
        spurious_spectra = hunt.stacked(same, "eigenvalues")
        if spurious_spectra is None or spurious_spectra.shape[1] == 0 or global_spectra is None:
            continue
        labels = [
            f"family {f}: {int(r)} run{'s' * (int(r) != 1)}, loss {loss:.4g}"
            for f, r, loss in zip(chosen["family"], chosen["runs"], chosen["loss"], strict=True)
        ]
        spurious = dict(zip(labels, spurious_spectra, strict=True))
        panels.append((int(k), int(n), len(global_rows), int(chosen["runs"].sum()), global_spectra, spurious))
    return panels


def _spectra_plots(hunt: HuntFolder, families: pd.DataFrame, folder: Path) -> list[Path]:
    """Spectra at global vs spurious minima: in detail for the configuration with the most families,
    and across every (k, n) with families in one figure."""
    panels = _spectra_panels(hunt, families)
    if not panels:
        return []

    def shown(global_runs: int, drawn: int) -> str:
        return f"{global_runs}" if drawn == global_runs else f"{drawn} of {global_runs}"

    k, n, global_runs, spurious_runs, global_spectra, spurious = max(
        panels, key=lambda p: (len(p[5]), p[3], p[0], -p[1])
    )
    written = [
        plots.spectra_comparison_plot(
            global_spectra,
            spurious,
            folder / "hessian_spectra.png",
            title=f"Hessian spectra at k={k}, n={n}: {shown(global_runs, len(global_spectra))} "
            f"global-minimum runs vs {len(spurious)} spurious famil{'y' if len(spurious) == 1 else 'ies'} "
            f"({spurious_runs} runs)",
        )
    ]
    if len(panels) >= 2:
        written.append(
            plots.spectra_across_k_plot(
                [
                    (f"k={k}, n={n}: {shown(g, len(gs))} global, {s} spurious runs", gs, sp)
                    for k, n, g, s, gs, sp in panels
                ],
                folder / "hessian_spectra_across_k.png",
                title="Sorted Hessian spectra at global (grey) and spurious minima across k",
            )
        )
    return written


def _basin_section(hunt: HuntFolder, lines: list[str], folder: Path) -> list[Path]:
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
    params = [c.removeprefix("param_") for c in hunt.param_columns]
    if hunt.landscape == "teacher_student" and {"k", "n"} <= set(table.columns):
        table = table.assign(excess_width=table["n"] - table["k"])
        x, line_keys, xlabel = "excess_width", ["k"], "excess width n - k"
    else:
        width = width_column(hunt)
        if width is None:
            return []
        x = width.removeprefix("param_")
        line_keys = [p for p in params if p != x and table[p].nunique() > 1]
        xlabel = x
    if table[x].nunique() < 2:
        return []
    return [plots.basin_plot(table, x, line_keys, folder / "basin_vs_width.png", xlabel=xlabel)]


def _classification_section(hunt: HuntFolder, lines: list[str], folder: Path) -> list[Path]:
    table = classification_table(hunt)
    if table.empty:
        return []
    params = [c.removeprefix("param_") for c in hunt.param_columns]
    lines += ["", "## Classification (L5): accuracy per configuration", ""]
    lines.append("Means over runs (`_sd`: standard deviation); `reached`: fraction at zero training error.")
    lines += ["", markdown_table(table)]
    gaps = baseline_gaps(hunt)
    lines += ["", "### Test-accuracy gap to the random-initialization baseline", ""]
    if gaps.empty:
        lines.append("No gap: the hunt lacks adversarially or randomly initialized runs to compare.")
    else:
        lines.append(
            "`gap` = mean test accuracy of randomly initialized runs minus that of adversarially "
            "initialized ones, over runs at zero training error (positive: the adversarial global minima "
            "generalize worse); `gap_se`: its standard error."
        )
        lines += ["", markdown_table(gaps)]
    labels = [", ".join(f"{p}={row[p]}" for p in params) or "all runs" for _, row in table.iterrows()]
    return [plots.accuracy_bars_plot(table, labels, folder / "accuracy.png")]


# ---- MLflow ----------------------------------------------------------------------------------------
def _fixed_from_mlflow(hunt: HuntFolder) -> dict[str, Any]:
    """The pipeline's fixed values from the hunt run's ``fixed`` parameter (empty when unavailable)."""
    if not (hunt.out / "mlflow.db").is_file():
        return {}
    try:
        client, run_id = _hunt_run(hunt.out, None, hunt.name)
        value = client.get_run(run_id).data.params.get("fixed", "{}")
        fixed = json.loads(value)
    except (LookupError, ValueError):
        return {}
    return fixed if isinstance(fixed, dict) else {}


def _hunt_run(out: Path, tracking_uri: str | None, name: str) -> tuple[Any, str]:
    """(client, run id) of the hunt's parent run, tagged minima_hunt.kind = 'hunt': in the experiment
    named after the hunt, else the only such run in the store. LookupError when there is none."""
    from mlflow.tracking import MlflowClient

    from study.tracking.mlflow_sink import TAG_KIND, default_tracking_uri

    if tracking_uri is None and not (out / "mlflow.db").is_file():
        raise LookupError(f"no MLflow store: {out / 'mlflow.db'} is missing and no tracking URI was given")
    client = MlflowClient(tracking_uri=tracking_uri or default_tracking_uri(out))
    experiments = client.search_experiments()
    named = [e for e in experiments if e.name == name]
    found = client.search_runs(
        [e.experiment_id for e in named or experiments],
        filter_string=f"tags.`{TAG_KIND}` = 'hunt'",
        order_by=["attributes.start_time DESC"],
        max_results=2,
    )
    if named and found:
        return client, str(found[0].info.run_id)
    if len(found) == 1:
        return client, str(found[0].info.run_id)
    what = "none" if not found else "several, and no experiment is named after the hunt"
    raise LookupError(f"MLflow runs tagged {TAG_KIND} = 'hunt' for hunt {name!r}: {what}")


def log_report(report: Report, *, tracking_uri: str | None = None, name: str | None = None) -> str:
    """Log the report's files to the hunt's parent MLflow run under ``report/``; returns the run id.

    The store is ``tracking_uri``, else ``OUT/mlflow.db``; LookupError when no hunt run is found."""
    from study.reports.hunt import hunt_name

    client, run_id = _hunt_run(report.out, tracking_uri, name or hunt_name(report.out))
    client.log_artifacts(run_id, str(report.folder), artifact_path="report")
    return run_id
