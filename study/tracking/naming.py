"""What a run says about itself in MLflow: its name, its description (``mlflow.note.content``) and the
certificate file of a counterexample, from its row of the run record.

A re-verified counterexample reads ``SPURIOUS k8-n8 L=0.0215 s100023`` in the runs table; its
description gives the configuration, loss, lambda_min, family, certificate radius and hypotheses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from study.record.schema import HYPOTHESIS_PREFIX, CriticalPoint, Verdict

HEADLINES: dict[str, str] = {  # critical-point class -> the first word of a run's name
    CriticalPoint.GLOBAL_MINIMUM: "global",
    CriticalPoint.SPURIOUS_MINIMUM: "spurious-uncertified",
    CriticalPoint.SADDLE: "saddle",
    CriticalPoint.DEGENERATE: "degenerate",
    CriticalPoint.NOT_CONVERGED: "not-converged",
    CriticalPoint.DIVERGED: "diverged",
}
VERDICT_HEADLINES: dict[str, str] = {  # verdict of the re-verification (study.diagnostics.verify)
    Verdict.CONTRADICTION_CANDIDATE: "CONTRADICTION?",
    Verdict.CONFIRMED: "SPURIOUS",
    Verdict.REJECTED: "spurious-rejected",
}
# Certificate fields of the run record copied into certificate.json (those present in the row).
CERTIFICATE_FIELDS = (
    "critical_point",
    "certified",
    "certificate",
    "radius",
    "loss",
    "l_star",
    "loss_gap",
    "grad_norm",
    "stationarity",
    "lambda_min",
    "lambda_lower",
    "lambda_max",
    "n_negative",
    "n_zero",
    "expected_zero",
    "spectrum_method",
    "spectrum_residual",
    "steps",
    "verdict",
    "verdict_reason",
    "verified_loss",
    "verified_stationarity",
    "verified_radius",
    "family",
    "rerun_loss",
    "verified_by",  # the family member whose verdict this run carries (study.diagnostics.verify)
)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _plain(value: Any) -> Any:
    """A JSON-safe Python value (NaN and inf become None, numpy scalars plain numbers)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def _certified(row: Mapping[str, Any]) -> bool:
    value = row.get("certified", False)
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)


def headline(row: Mapping[str, Any]) -> str:
    """The first word of a run's name: what its end point is."""
    if row.get("verdict"):
        return VERDICT_HEADLINES.get(str(row["verdict"]), str(row["verdict"]))
    cls = str(row.get("critical_point", ""))
    if cls == CriticalPoint.SPURIOUS_MINIMUM and _certified(row):
        return "SPURIOUS"
    if cls == CriticalPoint.SADDLE and math.isfinite(_number(row.get("n_negative"))):
        return f"saddle-i{int(_number(row['n_negative']))}"
    return HEADLINES.get(cls, cls or "run")


def parameters_label(values: Mapping[str, Any], *, sep: str = "-", limit: int = 4) -> str:
    """The trial's scalar parameters compactly, e.g. ``k8-n8``."""
    parts = [
        f"{k}{_short(v)}"
        for k, v in values.items()
        if isinstance(v, int | float | str) and not isinstance(v, bool)
    ]
    return sep.join(parts[:limit])


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_name(row: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """E.g. ``SPURIOUS k8-n8 L=0.0215 s100023`` or ``global k8-n8 L=3.1e-19 s100002``."""
    parts = [headline(row), parameters_label(values), f"L={_number(row.get('loss')):.3g}", f"s{row['seed']}"]
    return " ".join(p for p in parts if p)


def trial_name(number: int, values: Mapping[str, Any]) -> str:
    """E.g. ``trial 3: k=8 excess=0 n=8``."""
    label = " ".join(f"{k}={_short(v)}" for k, v in values.items())
    return f"trial {number}: {label}" if label else f"trial {number}"


def hypotheses(row: Mapping[str, Any]) -> dict[str, bool]:
    return {
        name[len(HYPOTHESIS_PREFIX) :]: _certified({"certified": value})
        for name, value in row.items()
        if name.startswith(HYPOTHESIS_PREFIX)
    }


def description(row: Mapping[str, Any], values: Mapping[str, Any], *, trial: int) -> str:
    """Markdown for the run's description: what it is, where, and the numbers that back it."""
    what = headline(row)
    cls = str(row.get("critical_point", "")).replace("_", " ")
    title = f"**{what}**: {cls}" + (", certified" if _certified(row) else "")
    if row.get("verdict"):
        title += f"; re-verification: **{row['verdict']}**"
    lines = [title, "", f"Trial {trial}, seed {row['seed']}.", "", "| | |", "|---|---|"]
    if values:
        lines.append("| parameters | " + ", ".join(f"{k} = {_short(v)}" for k, v in values.items()) + " |")
    loss, l_star = _number(row.get("loss")), _number(row.get("l_star"))
    gap = f", gap {_number(row.get('loss_gap')):.4g}" if math.isfinite(l_star) else ""
    lines.append(f"| loss | {loss:.6g} (L* = {l_star:.4g}{gap}) |")
    lowest, lower, top = (_number(row.get(c)) for c in ("lambda_min", "lambda_lower", "lambda_max"))
    lines.append(f"| lambda_min | {lowest:.4g} (lower bound {lower:.4g}; lambda_max {top:.4g}) |")
    lines.append(f"| gradient norm | {_number(row.get('grad_norm')):.3g} |")
    radius = _number(row.get("verified_radius"))
    if math.isnan(radius):  # not re-verified, or carrying a family's verdict: its own certificate
        radius = _number(row.get("radius"))
    certificate = str(row.get("certificate", "") or "none")
    lines.append(f"| certificate | radius {radius:.3g}; {certificate} |")
    if row.get("family"):
        lines.append(f"| family | {row['family']} |")
    if row.get("verdict_reason"):
        by = row.get("verified_by")
        carried = f" (verdict carried from {by})" if isinstance(by, str) and by else ""
        lines.append(f"| verdict | {row['verdict']}: {row['verdict_reason']}{carried} |")
    held = hypotheses(row)
    if held:
        lines.append(
            "| hypotheses | "
            + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in sorted(held.items()))
            + " |"
        )
    return "\n".join(lines)


def certificate_json(row: Mapping[str, Any], values: Mapping[str, Any], *, key: str, trial: int) -> str:
    """The counterexample's certificate as JSON (NaN written as null): enough to re-check it."""
    document = {
        "run_key": key,
        "trial": trial,
        "seed": _plain(row.get("seed")),
        "landscape": _plain(row.get("landscape")),
        "parameters": {k: _plain(v) for k, v in values.items()},
        **{name: _plain(row[name]) for name in CERTIFICATE_FIELDS if name in row},
        "hypotheses": hypotheses(row),
    }
    return json.dumps(document, indent=2, allow_nan=False)
