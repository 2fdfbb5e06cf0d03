"""Labels where L* is unknown: made once, by the driver, against the best of every run of a configuration.

A landscape without a closed-form L* (teacher-student with n < k, piecewise-linear nets off their
theorem) lets the best converged loss of the configuration stand in for it. Only the driver sees every
run of a configuration, so only the driver labels: the workers return end points and label-free
diagnostics (loss, second-order verdict, certificate, escape test), and :class:`ConfigurationLabels`

1. labels a finished trial's runs against min(the configuration's best so far, the trial's best);
2. when that lowers the best, relabels the configuration's earlier trials (their files are read back):
   a lower best only turns global minima into spurious ones, never the reverse;
3. sends every run that is now a certified spurious minimum without a verdict (or whose verdict read
   an L* on the other side of ``gap_tol``: :func:`study.diagnostics.verify.due_for_verification`) to
   re-verification as follow-up Ray tasks, and waits for them.

The writer then stores the labels in every place at once (trial files, MLflow, the told objective), so
they agree. Where the landscape knows L* the worker's labels and verdicts are final and nothing here
touches them. The best of each configuration is kept in memory and on each told trial
(``configuration_best``), so a resumed hunt reads no trial file to know it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from study.diagnostics.critical import label_against
from study.diagnostics.verify import BLANK_VERDICT, VERDICT_COLUMNS, due_for_verification
from study.record import load_arrays, trial_stem
from study.record.files import read_csv
from study.runs import RunSpec, verifies
from study.search.hunt_study import configuration_key, replaced_trials

BEST_ATTR = "configuration_best"  # user attr of a told trial: its configuration's best so far
SOURCE = "best of configuration"  # l_star_source of a row labelled here
LABELS = ("l_star", "l_star_source", "loss_gap", "critical_point")
_NO_L_STAR = ("landscape",)  # l_star_source values that are final in the worker

Verify = Callable[[RunSpec, pd.DataFrame, np.ndarray, np.ndarray], pd.DataFrame]


@dataclass(frozen=True)
class Relabelled:
    """An earlier trial of the configuration after the best dropped: all its rows (write them back) and
    the positions whose label or verdict changed (update those runs in MLflow)."""

    seed_base: int
    trial: int
    frame: pd.DataFrame
    changed: list[int]


def unknown_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose L* is not the landscape's (labelled by the driver)."""
    return ~frame["l_star_source"].astype(str).isin(_NO_L_STAR).to_numpy()


def best_converged(frame: pd.DataFrame) -> float:
    """The lowest loss among converged runs (any second-order verdict); NaN when none converged."""
    converged = ~frame["critical_point"].isin(["not_converged", "diverged"])
    return float(frame.loc[converged, "loss"].min()) if bool(converged.any()) else math.nan


def _lower(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


class ConfigurationLabels:
    """The driver's labels where L* is unknown; used on the writer's thread only (one trial at a time)."""

    def __init__(self, out: Path, *, gap_tol: float, verify: Verify | None) -> None:
        self.out = out
        self.gap_tol = gap_tol
        self.verify = verify  # None: re-verification is not available (no pool)
        self.best: dict[str, float] = {}
        self.members: dict[str, list[tuple[int, int]]] = {}  # configuration -> (seed_base, trial) written

    def resume(self, study: optuna.Study) -> None:
        """Remember the configurations of the trials already told (complete or pruned) with their files."""
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        replaced = replaced_trials(study)
        for t in study.get_trials(deepcopy=False, states=done):
            if t.number in replaced or "values" not in t.user_attrs:
                continue
            seed_base = int(t.user_attrs.get("seed_base", t.number))
            best = t.user_attrs.get(BEST_ATTR)
            if best is None:  # told before labels moved to the driver: read its file once
                frame = read_csv(self.out / "trials" / f"{trial_stem(seed_base)}.csv")
                if frame is None or not len(frame) or not unknown_rows(frame).any():
                    continue
                best = best_converged(frame)
            key = configuration_key(json.loads(t.user_attrs["values"]))
            self.best[key] = _lower(self.best.get(key, math.nan), float(best))
            self.members.setdefault(key, []).append((seed_base, t.number))

    def settle(
        self,
        values: dict[str, object],
        run_spec: RunSpec,
        frame: pd.DataFrame,
        theta: np.ndarray,
        theta0: np.ndarray,
        *,
        seed_base: int,
        trial: int,
    ) -> tuple[pd.DataFrame, list[Relabelled]]:
        """Label a finished trial's runs (``frame`` aligned with ``theta, theta0: (R, P)``) against its
        configuration's best, relabel the configuration's earlier trials when the best drops, and
        re-verify every run that became due; returns the trial's rows and the earlier trials that moved."""
        if not unknown_rows(frame).any():
            return frame, []
        key = configuration_key(dict(values))
        old = self.best.get(key, math.nan)
        best = _lower(old, best_converged(frame))
        verifying = verifies(run_spec) and self.verify is not None
        labelled = self._label(frame, best, verifying)
        parts = [(labelled, theta, theta0, np.full(len(frame), math.nan))]
        earlier: list[tuple[int, int, pd.DataFrame, pd.DataFrame]] = []
        if best != old:  # lower (or the first finite best): earlier labels move
            for earlier_base, number in self.members.get(key, []):
                before = read_csv(self.out / "trials" / f"{trial_stem(earlier_base)}.csv")
                if before is None or not len(before):
                    continue
                after = self._label(before, best, verifying)
                earlier.append((earlier_base, number, before, after))
                if verifying:
                    arrays = load_arrays(self.out, trial_stem(earlier_base), ("theta", "theta0"))
                    previous = before["l_star"].to_numpy(dtype=float)
                    parts.append((after, arrays["theta"], arrays["theta0"], previous))
        if verifying:
            self._verify(run_spec, parts)
        self.best[key] = best
        self.members.setdefault(key, []).append((seed_base, trial))
        moved = [
            Relabelled(base, number, after, _changed(before, after))
            for base, number, before, after in earlier
        ]
        return labelled, moved

    def _label(self, frame: pd.DataFrame, best: float, verifying: bool) -> pd.DataFrame:
        """``frame`` with its unknown-L* rows labelled against ``best``; verdict columns present (blank
        where missing) when the hunt re-verifies, and blank for rows that are no longer candidates."""
        out = frame.copy()
        rows = unknown_rows(out)
        labelled = label_against(out[rows], [best] * int(rows.sum()), gap_tol=self.gap_tol, source=SOURCE)
        for column in LABELS:
            out.loc[rows, column] = labelled[column]
        if verifying:
            candidate = (out["critical_point"] == "spurious_minimum") & out["certified"].astype(bool)
            for column, blank in BLANK_VERDICT.items():
                if column not in out:
                    out[column] = blank
                elif isinstance(blank, str):  # a blank string reads back from CSV as NaN
                    out[column] = _filled(out[column], blank)
                out.loc[~candidate, column] = blank
        return out

    def _verify(
        self, run_spec: RunSpec, parts: list[tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]]
    ) -> None:
        """Re-verify the due rows of every part in one round of follow-up tasks; verdicts written in place."""
        assert self.verify is not None
        chosen = [
            due_for_verification(frame, previous, gap_tol=self.gap_tol) for frame, _, _, previous in parts
        ]
        if not any(c.any() for c in chosen):
            return
        needed = ["seed", "loss", "critical_point", "certified", "l_star"]
        rows = pd.concat(
            [
                frame.loc[due, needed + [c for c in frame.columns if c.startswith("hyp_")]]
                for (frame, _, _, _), due in zip(parts, chosen, strict=True)
            ],
            ignore_index=True,
        )
        theta = np.concatenate([t[due] for (_, t, _, _), due in zip(parts, chosen, strict=True)])
        theta0 = np.concatenate([t0[due] for (_, _, t0, _), due in zip(parts, chosen, strict=True)])
        verified = self.verify(run_spec, rows, theta, theta0).reset_index(drop=True)
        start = 0
        for (frame, _, _, _), due in zip(parts, chosen, strict=True):
            count = int(due.sum())
            for column in VERDICT_COLUMNS:
                frame.loc[due, column] = verified[column].iloc[start : start + count].to_numpy()
            start += count


def _changed(before: pd.DataFrame, after: pd.DataFrame) -> list[int]:
    """Positions whose class or verdict differs (what a run's MLflow tags show)."""
    tagged = ("critical_point", "verdict", "verdict_reason", "family", "verified_by")
    columns = [c for c in tagged if c in after]
    old = np.array(
        [_filled(before[c], "") if c in before else [""] * len(before) for c in columns], dtype=str
    )
    new = np.array([_filled(after[c], "") for c in columns], dtype=str)
    return [int(i) for i in np.flatnonzero((old != new).any(axis=0))]


def _filled(column: pd.Series, blank: object) -> pd.Series:
    """``column`` with its missing values (a blank string reads back from CSV as NaN) set to ``blank``."""
    return column.astype(object).where(column.notna(), blank)
