"""Trial objectives computed from a trial's runs (one DataFrame row per run)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from study.record import CriticalPoint, counterexamples
from study.record import certified_spurious as _certified_spurious


def objective_value(name: str, frame: pd.DataFrame, values: dict[str, Any]) -> float:
    """The named objective (see ``study.spec.OBJECTIVES``) for one trial."""
    if name == "spurious_rate":
        return float(len(_certified_spurious(frame)) / max(1, len(frame)))
    if name == "classified_spurious_rate":
        return float((frame["critical_point"] == CriticalPoint.SPURIOUS_MINIMUM).mean())
    if name == "max_gap":
        gaps = _certified_spurious(frame)["loss_gap"]
        return float(gaps.max()) if len(gaps) else 0.0
    if name == "overparameterization":
        return float(values["n"] - values["k"])
    if name == "non_global_rate":
        return float((frame["critical_point"] != CriticalPoint.GLOBAL_MINIMUM).mean())
    if name == "test_error":
        return float(1.0 - frame["test_acc"].mean())
    raise ValueError(f"unknown objective {name!r}")


def trial_summary(frame: pd.DataFrame) -> dict[str, Any]:
    """Counts per class, certified and re-verified counterexamples and the lowest spurious loss."""
    counts = frame["critical_point"].value_counts().to_dict()
    spurious = _certified_spurious(frame)
    return {
        "runs": len(frame),
        "counts": {str(k): int(v) for k, v in counts.items()},
        "certified_spurious": len(spurious),
        "counterexamples": len(counterexamples(frame)),
        "lowest_spurious_loss": float(spurious["loss"].min()) if len(spurious) else None,
    }


def summary_metrics(runs: int, found: int) -> dict[str, float]:
    """A trial's or a hunt's summary for MLflow: runs, counterexamples, their rate and its 95% Wilson
    interval."""
    from study.reports.tables import binomial_interval

    low, high = binomial_interval(found, runs)
    return {
        "runs": float(runs),
        "counterexamples": float(found),
        "counterexample_rate": found / runs if runs else math.nan,
        "counterexample_rate_low": low,
        "counterexample_rate_high": high,
    }
