"""Tables for large sweeps: counterexamples inside a theorem's hypotheses, settled kinks, and the
published Safran-Shamir grid beside our rates."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from study.record import CriticalPoint, param_column
from study.record import is_certified_spurious as certified_spurious
from study.record.schema import CLASSES, HYPOTHESIS_PREFIX, PARAM_PREFIX
from study.reports.tables import binomial_interval

#: verdicts that say a not-converged run ended at a non-differentiable critical point
NONDIFFERENTIABLE = ("nondifferentiable minimum", "nondifferentiable, escaped")


def inside_hypotheses(runs: pd.DataFrame) -> pd.Series:
    """Boolean per run: every ``hyp_*`` flag true (the theorem applies). Flags that describe the setting
    rather than assume something (``hyp_dropout_noise`` is informational) count too."""
    flags = [c for c in runs.columns if c.startswith(HYPOTHESIS_PREFIX)]
    if not flags:
        return pd.Series(False, index=runs.index)
    return runs[flags].astype(str).apply(lambda col: col.str.lower() == "true").all(axis=1)


def sweep_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: runs, inside the hypotheses or not, class counts, certified spurious minima,
    how runs stopped, and for not-converged runs the kink verdicts (non-differentiable points vs
    undecided)."""
    params = [c for c in runs.columns if c.startswith(PARAM_PREFIX)]
    rows = []
    for key, group in runs.groupby(params, dropna=False, sort=True) if params else [((), runs)]:
        values = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = {c.removeprefix(PARAM_PREFIX): v for c, v in zip(params, values, strict=True)}
        row["runs"] = len(group)
        row["inside"] = bool(inside_hypotheses(group).all())
        for cls in CLASSES:
            row[cls] = int((group["critical_point"] == cls).sum())
        row["certified_spurious"] = int(certified_spurious(group).sum())
        if "stop_reason" in group:
            row["stalled"] = int((group["stop_reason"] == "stalled").sum())
        if "kink_verdict" in group:
            verdict = group["kink_verdict"].fillna("").astype(str)
            row["nondifferentiable"] = int(verdict.isin(NONDIFFERENTIABLE).sum())
            row["nondiff_minimum"] = int((verdict == "nondifferentiable minimum").sum())
            row["kink_not_stationary"] = int((verdict == "at a kink, not stationary").sum())
            row["undecided"] = int((verdict == "undecided").sum())
        if "training_error" in group:
            row["zero_training_error"] = int((group["training_error"] == 0).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def grid_comparison(
    runs: pd.DataFrame,
    published: dict[tuple[int, int], float] | None = None,
    *,
    confidence: float = 0.99,
) -> pd.DataFrame:
    """Safran-Shamir grid: per (k, n) our certified spurious rate with its Wilson interval at
    ``confidence``, the published rate (a fraction) where given, and whether it lies outside our interval
    (None where no published rate is given)."""
    rows = []
    for (k, n), group in runs.groupby([param_column("k"), param_column("n")], sort=True):
        count = int(certified_spurious(group).sum())
        classified = int((group["critical_point"] == CriticalPoint.SPURIOUS_MINIMUM).sum())
        low, high = binomial_interval(count, len(group), confidence=confidence)
        ref = (published or {}).get((int(k), int(n)), math.nan)
        rows.append(
            {
                "k": int(k),
                "n": int(n),
                "runs": len(group),
                "spurious_certified": count,
                "spurious_classified": classified,
                "rate": count / len(group),
                "low": low,
                "high": high,
                "published": ref,
                "disagrees": None if math.isnan(ref) else bool(not low <= ref <= high),
            }
        )
    return pd.DataFrame(rows)
