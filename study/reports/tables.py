"""Summary tables of a hunt: class counts and rates per configuration, basin quality; markdown."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from study.record import CLASSES, PARAM_PREFIX, CriticalPoint, is_certified_spurious
from study.reports.hunt import WIDTH_COLUMNS, HuntFolder


def binomial_interval(successes: int, trials: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when ``trials`` is 0."""
    if trials <= 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    return float(ci.low), float(ci.high)


def groups(runs: pd.DataFrame, columns: list[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """(values of ``columns``, rows) per configuration, in sorted order; one group if no columns."""
    if not columns:
        return [({}, runs)]
    out = []
    for key, rows in runs.groupby(columns, dropna=False, sort=True):
        values = key if isinstance(key, tuple) else (key,)
        out.append((dict(zip(columns, values, strict=True)), rows))
    return out


def configuration_table(hunt: HuntFolder) -> pd.DataFrame:
    """Per configuration (the param_ columns): runs, counts per class, certified spurious rate with a 95%
    Wilson interval and lowest certified spurious loss."""
    params = hunt.param_columns
    rows = []
    for values, group in groups(hunt.runs, params):
        spurious = is_certified_spurious(group)
        count = int(spurious.sum())
        low, high = binomial_interval(count, len(group))
        row: dict[str, Any] = {c.removeprefix(PARAM_PREFIX): v for c, v in values.items()}
        row["runs"] = len(group)
        for cls in CLASSES:
            row[cls] = int((group["critical_point"] == cls).sum())
        row["certified_spurious"] = count
        row["rate"] = count / len(group)
        row["rate_low"], row["rate_high"] = low, high
        row["lowest_spurious_loss"] = float(group.loc[spurious, "loss"].min()) if count else math.nan
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
    for values, group in groups(hunt.runs, hunt.param_columns):
        reached = int((group["critical_point"] == CriticalPoint.GLOBAL_MINIMUM).sum())
        low, high = binomial_interval(reached, len(group))
        bump = pd.to_numeric(group["line_largest_bump"], errors="coerce")
        row: dict[str, Any] = {c.removeprefix(PARAM_PREFIX): v for c, v in values.items()}
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
