"""Summary tables of a hunt: class counts and rates per configuration, families, basin quality, L5."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from study.diagnostics.critical import CLASSES
from study.reports.hunt import WIDTH_COLUMNS, HuntFolder


def binomial_interval(successes: int, trials: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when ``trials`` is 0."""
    if trials <= 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    return float(ci.low), float(ci.high)


def _groups(runs: pd.DataFrame, columns: list[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """(values of ``columns``, rows) per configuration, in sorted order; one group if no columns."""
    if not columns:
        return [({}, runs)]
    out = []
    for key, rows in runs.groupby(columns, dropna=False, sort=True):
        values = key if isinstance(key, tuple) else (key,)
        out.append((dict(zip(columns, values, strict=True)), rows))
    return out


def certified_spurious(runs: pd.DataFrame) -> pd.Series:
    """Boolean per run: a certified spurious minimum (a counterexample candidate)."""
    certified = runs["certified"].astype(bool) if "certified" in runs else False
    return (runs["critical_point"] == "spurious_minimum") & certified


def configuration_table(hunt: HuntFolder, families: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per configuration (the param_ columns): runs, counts per class, certified spurious rate with a 95%
    Wilson interval, lowest certified spurious loss, and the number of families (teacher-student)."""
    params = hunt.param_columns
    rows = []
    for values, group in _groups(hunt.runs, params):
        spurious = certified_spurious(group)
        count = int(spurious.sum())
        low, high = binomial_interval(count, len(group))
        row: dict[str, Any] = {c.removeprefix("param_"): v for c, v in values.items()}
        row["runs"] = len(group)
        for cls in CLASSES:
            row[cls] = int((group["critical_point"] == cls).sum())
        row["certified_spurious"] = count
        row["rate"] = count / len(group)
        row["rate_low"], row["rate_high"] = low, high
        row["lowest_spurious_loss"] = float(group.loc[spurious, "loss"].min()) if count else math.nan
        if families is not None:
            match = families
            for c, v in values.items():
                name = c.removeprefix("param_")
                if name in match.columns:
                    match = match[match[name] == v]
            row["families"] = len(match) if count else 0
        rows.append(row)
    return pd.DataFrame(rows)


def width_column(hunt: HuntFolder) -> str | None:
    """The parameter that sets the model's width, when one is searched."""
    return next((c for c in WIDTH_COLUMNS if c in hunt.runs.columns), None)


def basin_table(hunt: HuntFolder) -> pd.DataFrame:
    """Per configuration: fraction reaching L* (95% Wilson interval), fraction of monotone straight lines
    from the initialization, and quantiles of the largest bump along them (SCIENCE.md L4)."""
    if "line_monotone" not in hunt.runs.columns:
        return pd.DataFrame()
    rows = []
    for values, group in _groups(hunt.runs, hunt.param_columns):
        reached = int((group["critical_point"] == "global_minimum").sum())
        low, high = binomial_interval(reached, len(group))
        bump = pd.to_numeric(group["line_largest_bump"], errors="coerce")
        row: dict[str, Any] = {c.removeprefix("param_"): v for c, v in values.items()}
        row.update(
            runs=len(group),
            reached=reached / len(group),
            reached_low=low,
            reached_high=high,
            monotone=float(group["line_monotone"].astype(bool).mean()),
            bump_median=float(bump.median()),
            bump_q90=float(bump.quantile(0.9)),
            bump_max=float(bump.max()),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def classification_table(hunt: HuntFolder) -> pd.DataFrame:
    """L5: per configuration, mean and standard deviation of train/test accuracy, the phase-1 (random
    label) train accuracy and the fraction of runs that reached zero training error."""
    if "test_acc" not in hunt.runs.columns:
        return pd.DataFrame()
    rows = []
    for values, group in _groups(hunt.runs, hunt.param_columns):
        row: dict[str, Any] = {c.removeprefix("param_"): v for c, v in values.items()}
        row["runs"] = len(group)
        row["reached"] = float((group["critical_point"] == "global_minimum").mean())
        for column in ("train_acc", "test_acc", "phase1_train_acc"):
            if column in group:
                data = pd.to_numeric(group[column], errors="coerce")
                row[column] = float(data.mean())
                row[f"{column}_sd"] = float(data.std(ddof=1)) if data.count() > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def baseline_gaps(hunt: HuntFolder) -> pd.DataFrame:
    """L5: test-accuracy gap of adversarially initialized runs to the random-init baseline, per setting
    of the other parameters (regularization, model, ...); see ``classification.baseline_gap``."""
    runs = hunt.runs
    if "test_acc" not in runs.columns or "param_init" not in runs.columns:
        return pd.DataFrame()
    from study.landscapes.classification import baseline_gap

    others = [c for c in hunt.param_columns if c != "param_init"]
    rows = []
    for values, group in _groups(runs, others):
        adversarial = group[group["param_init"] == "adversarial"]
        clean = group[group["param_init"] == "random"]
        if len(adversarial) == 0 or len(clean) == 0:
            continue
        gap = baseline_gap(adversarial, clean).iloc[0].to_dict()
        rows.append({**{c.removeprefix("param_"): v for c, v in values.items()}, **gap})
    return pd.DataFrame(rows)


def teacher_student_sizes(hunt: HuntFolder, values: dict[str, Any], fixed: dict[str, Any]) -> dict[str, int]:
    """k, n, d of a teacher-student configuration from its parameters, else the pipeline's fixed values."""
    sizes: dict[str, int] = {}
    for name in ("k", "n", "d"):
        value = values.get(f"param_{name}", fixed.get(name))
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            sizes[name] = int(value)
    if "k" in sizes:
        sizes.setdefault("d", sizes["k"])
    return sizes


def families_table(hunt: HuntFolder, fixed: dict[str, Any] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Families of certified spurious minima per teacher-student configuration, and notes on what was
    skipped. ``representative`` indexes ``hunt.runs`` (and so runs.csv)."""
    from study.landscapes.teacher_student_families import FAMILY_COLUMNS, spurious_families

    fixed = fixed or {}
    notes: list[str] = []
    tables = []
    for values, group in _groups(hunt.runs, hunt.param_columns):
        if not certified_spurious(group).any():
            continue
        sizes = teacher_student_sizes(hunt, values, fixed)
        label = ", ".join(f"{c.removeprefix('param_')}={v}" for c, v in values.items()) or "all runs"
        if not {"k", "n"} <= set(sizes):
            notes.append(f"{label}: k or n unknown (not a parameter and no pipeline metadata); no families")
            continue
        theta = hunt.stacked(group, "theta")
        if theta is None or theta.shape[1] != sizes["n"] * sizes["d"]:
            notes.append(f"{label}: end points missing or of the wrong size in trials/*.npz; no families")
            continue
        eigenvalues = hunt.stacked(group, "eigenvalues")
        if eigenvalues is None:
            eigenvalues = np.zeros((len(group), 0))
        identity = (
            bool(group["hyp_orthonormal_teacher"].iloc[0]) if "hyp_orthonormal_teacher" in group else True
        )
        table = spurious_families(
            group.reset_index(drop=True),
            theta,
            eigenvalues,
            k=sizes["k"],
            n=sizes["n"],
            d=sizes["d"],
            identity_teacher=identity,
        )
        table["representative"] = group.index.to_numpy()[table["representative"].to_numpy()]
        for c, v in values.items():
            name = c.removeprefix("param_")
            if name not in table.columns:
                table[name] = v
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=list(FAMILY_COLUMNS)), notes
    return pd.concat(tables, ignore_index=True), notes


# ---- markdown ----------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no dependency on tabulate)."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def interval_text(rate: float, low: float, high: float) -> str:
    """``0.094 [0.032, 0.24]``."""
    if math.isnan(rate):
        return "-"
    return f"{rate:.3g} [{low:.3g}, {high:.3g}]"
