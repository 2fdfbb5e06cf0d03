"""The run record: what one training run is, as everything downstream reads it.

A run has core fields every landscape fills (:class:`RunRecord`), the landscape's name, its theorem's
hypotheses (``hyp_*`` columns), the trial's parameter values (``param_*`` columns) and a namespace of
landscape-specific diagnostics (every other column, e.g. ``best_angle`` or ``test_acc``). A batch of
runs travels as a :class:`RunBatch`: one DataFrame row per run plus arrays with a leading run dimension.

Schema versions: 1 (before this module) wrote no ``landscape`` and no ``schema`` column; 2 adds both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

SCHEMA_VERSION = 2


class CriticalPoint(StrEnum):
    """The class of a run's end point, the record's ``critical_point`` (SCIENCE.md, Vocabulary)."""

    GLOBAL_MINIMUM = "global_minimum"
    SPURIOUS_MINIMUM = "spurious_minimum"
    SADDLE = "saddle"
    DEGENERATE = "degenerate"
    NOT_CONVERGED = "not_converged"
    DIVERGED = "diverged"


class Verdict(StrEnum):
    """The re-verification's verdict on a certified spurious minimum, the record's ``verdict``
    (:mod:`study.diagnostics.verify`; empty for runs it did not re-verify)."""

    CONTRADICTION_CANDIDATE = "contradiction_candidate"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


CLASSES = tuple(c.value for c in CriticalPoint)
VERDICTS = tuple(v.value for v in Verdict)  # the order summaries list them in
COUNTEREXAMPLE_VERDICTS = (Verdict.CONTRADICTION_CANDIDATE.value, Verdict.CONFIRMED.value)

HYPOTHESIS_PREFIX = "hyp_"
PARAM_PREFIX = "param_"
TRIAL_COLUMNS = ("trial", "seed_base")  # set by the driver; absent for runs made outside a hunt
META_COLUMNS = ("landscape", "schema")


def param_column(name: str) -> str:
    """The runs-table column of the trial parameter ``name`` (e.g. ``param_k``)."""
    return f"{PARAM_PREFIX}{name}"


@dataclass(frozen=True)
class RunRecord:
    """One training run's end point, diagnosed (SCIENCE.md, Vocabulary).

    loss_gap = loss - l_star; lambda_* are Hessian eigenvalue extremes (lambda_lower a certified lower
    bound); n_negative is the saddle index; radius is the certified ball (NaN without certificate).
    """

    seed: int
    steps: int
    restarts: int
    loss: float
    loss_gap: float
    l_star: float
    l_star_source: str
    grad_norm: float
    stationarity: float
    lambda_min: float
    lambda_max: float
    lambda_lower: float
    n_negative: int
    n_zero: int
    expected_zero: int
    spectrum_method: str
    spectrum_residual: float
    critical_point: str
    escaped: bool
    certified: bool
    radius: float
    certificate: str
    final_lr: float
    converged: bool
    train_seconds_per_run: float
    seconds_per_run: float
    device: str
    landscape: str = "unknown"
    trial: int = -1
    seed_base: int = -1
    hypotheses: Mapping[str, bool] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    diagnostics: Mapping[str, Any] = field(default_factory=dict)  # the landscape's own namespace
    schema: int = SCHEMA_VERSION

    @property
    def certified_spurious(self) -> bool:
        return self.critical_point == CriticalPoint.SPURIOUS_MINIMUM and self.certified


_FIELDS = {f.name: f for f in dataclasses.fields(RunRecord)}
_NAMESPACES = ("hypotheses", "params", "diagnostics")
CORE_COLUMNS = tuple(
    name for name in _FIELDS if name not in _NAMESPACES and name not in TRIAL_COLUMNS + META_COLUMNS
)
_INT = {n for n, f in _FIELDS.items() if f.type == "int"}
_FLOAT = {n for n, f in _FIELDS.items() if f.type == "float"}
_BOOL = {n for n, f in _FIELDS.items() if f.type == "bool"}


def _cast(name: str, value: Any) -> Any:
    if name in _BOOL:
        return _as_bool(value)
    if name in _INT:
        return int(value)
    if name in _FLOAT:
        return float(value) if value is not None else math.nan
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def diagnostic_columns(frame: pd.DataFrame) -> list[str]:
    """The landscape-specific columns of a runs frame (the diagnostics namespace)."""
    known = set(CORE_COLUMNS) | set(TRIAL_COLUMNS) | set(META_COLUMNS) | {"array_file", "array_row"}
    return [
        c for c in frame.columns if c not in known and not c.startswith((HYPOTHESIS_PREFIX, PARAM_PREFIX))
    ]


def check_frame(frame: pd.DataFrame) -> None:
    """Raise ValueError naming the core columns a runs frame lacks."""
    missing = [c for c in CORE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"run record lacks core column(s) {missing}")


def records(frame: pd.DataFrame) -> list[RunRecord]:
    """Typed records of the rows of a runs frame (core fields cast; the rest in their namespaces)."""
    check_frame(frame)
    hyp = [c for c in frame.columns if c.startswith(HYPOTHESIS_PREFIX)]
    par = [c for c in frame.columns if c.startswith(PARAM_PREFIX)]
    diag = diagnostic_columns(frame)
    out = []
    for row in frame.to_dict(orient="records"):
        core = {name: _cast(name, row[name]) for name in CORE_COLUMNS}
        for name in TRIAL_COLUMNS:
            if name in row and not pd.isna(row[name]):
                core[name] = int(row[name])
        out.append(
            RunRecord(
                **core,
                landscape=str(row.get("landscape", "unknown")),
                schema=int(row.get("schema", SCHEMA_VERSION)),
                hypotheses={c[len(HYPOTHESIS_PREFIX) :]: _as_bool(row[c]) for c in hyp},
                params={c[len(PARAM_PREFIX) :]: row[c] for c in par},
                diagnostics={c: row[c] for c in diag},
            )
        )
    return out


def to_frame(runs: list[RunRecord]) -> pd.DataFrame:
    """The flat runs frame of typed records (inverse of :func:`records`)."""
    rows = []
    for r in runs:
        row: dict[str, Any] = {}
        if r.trial >= 0:
            row.update(trial=r.trial, seed_base=r.seed_base)
        row.update({name: getattr(r, name) for name in CORE_COLUMNS})
        row.update(r.diagnostics)
        row.update({f"{HYPOTHESIS_PREFIX}{k}": v for k, v in r.hypotheses.items()})
        row.update({f"{PARAM_PREFIX}{k}": v for k, v in r.params.items()})
        row.update(landscape=r.landscape, schema=r.schema)
        rows.append(row)
    return pd.DataFrame(rows)


def stamp(frame: pd.DataFrame, landscape: str) -> pd.DataFrame:
    """Name the landscape and the schema version on every row (in place; returns the frame)."""
    frame["landscape"] = landscape
    frame["schema"] = SCHEMA_VERSION
    return frame


def is_certified_spurious(frame: pd.DataFrame) -> pd.Series:
    """Boolean per run: classified spurious_minimum with a certificate (a counterexample candidate)."""
    if not {"critical_point", "certified"} <= set(frame.columns):
        return pd.Series(False, index=frame.index)
    return (frame["critical_point"] == CriticalPoint.SPURIOUS_MINIMUM) & frame["certified"].map(_as_bool)


def certified_spurious(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`is_certified_spurious`."""
    if not len(frame):
        return frame
    return frame[is_certified_spurious(frame)]


def family_key(loss: float, eigenvalues: np.ndarray, invariants: np.ndarray, *, decimals: int = 5) -> str:
    """The ``family`` column's key: the loss and a digest of the rounded spectrum and invariants
    (end points with equal keys are one family of critical points)."""
    rounded = np.round(np.concatenate([np.sort(eigenvalues), invariants]), decimals) + 0.0
    digest = hashlib.sha1(np.ascontiguousarray(rounded).tobytes()).hexdigest()[:10]
    return f"{loss:.6g}-{digest}"


def is_counterexample(frame: pd.DataFrame) -> pd.Series:
    """Boolean per run: THE counterexample predicate. With a ``verdict`` column (the hunt re-verified),
    a run whose verdict is confirmed or contradiction_candidate; without one, a certified spurious
    minimum."""
    if "verdict" not in frame:
        return is_certified_spurious(frame)
    return frame["verdict"].isin(COUNTEREXAMPLE_VERDICTS)


def counterexamples(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`is_counterexample`."""
    return frame[is_counterexample(frame)] if len(frame) else frame


# ---- older versions ----------------------------------------------------------------------------------
_V1_SIGNATURES = (  # schema 1 did not name the landscape: the columns each one wrote tell it
    ("test_acc", "classification"),
    ("hyp_orthonormal_teacher", "teacher_student"),
    ("hyp_n_le_d0_d1", "piecewise_linear"),
    ("hyp_x_full_row_rank", "deep_linear"),
)


def migrate(frame: pd.DataFrame) -> pd.DataFrame:
    """Bring a runs frame read from disk to the current schema (adds ``landscape`` and ``schema``, and
    ``verified_by`` blank where a verdict was made before re-verification by family: each run itself)."""
    if not len(frame.columns):
        return frame
    if "schema" not in frame.columns:  # schema 1
        landscape = next((name for col, name in _V1_SIGNATURES if col in frame.columns), "unknown")
        frame = frame.assign(landscape=landscape, schema=1)
    if "verdict" in frame.columns and "verified_by" not in frame.columns:
        frame = frame.assign(verified_by="")
    return frame


@dataclass(frozen=True)
class RunBatch:
    """Results for R runs: one DataFrame row per run plus arrays with a leading run dimension."""

    frame: pd.DataFrame
    theta: np.ndarray  # (R, P) end points
    theta0: np.ndarray  # (R, P) initializations
    eigenvalues: np.ndarray  # (R, P) Hessian spectra ((R, 0) when only extremes were computed)
    curve_steps: np.ndarray  # (C,)
    curve: np.ndarray  # (R, C) subsampled loss curves
    # (R, 2) when each run's training started and ended, wall-clock seconds since the epoch (a chunk's
    # replicas train together, so they share their chunk's span)
    train_span: np.ndarray

    @staticmethod
    def concat(batches: list[RunBatch]) -> RunBatch:
        """Stack batches of the same configuration along the run dimension."""
        return RunBatch(
            frame=pd.concat([b.frame for b in batches], ignore_index=True),
            theta=np.concatenate([b.theta for b in batches]),
            theta0=np.concatenate([b.theta0 for b in batches]),
            eigenvalues=np.concatenate([b.eigenvalues for b in batches]),
            curve_steps=batches[0].curve_steps,
            curve=np.concatenate([b.curve for b in batches]),
            train_span=np.concatenate([b.train_span for b in batches]),
        )

    def records(self) -> list[RunRecord]:
        return records(self.frame)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays saved per trial (keyed as in the npz file)."""
        return {
            "theta": self.theta,
            "theta0": self.theta0,
            "eigenvalues": self.eigenvalues,
            "curve": self.curve,
            "curve_steps": self.curve_steps,
            "seed": self.frame["seed"].to_numpy(),
        }


def loss_history(
    curve_steps: np.ndarray, curve: np.ndarray, total_steps: int, final_loss: float
) -> list[tuple[int, float]]:
    """One run's loss curve as (step, loss) pairs: its finite grid samples before ``total_steps``,
    then the final loss at ``total_steps`` (so the first and the last step are always there)."""
    history = [
        (int(s), float(v))
        for s, v in zip(curve_steps, curve, strict=False)
        if int(s) < total_steps and math.isfinite(float(v))
    ]
    if math.isfinite(final_loss) or not history:
        history.append((int(total_steps), float(final_loss)))
    return history
