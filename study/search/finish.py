"""Finishing a trial: write its record files, log its runs, tell Optuna, add it to the hunt's tables.

Trials are finished on one background thread, in order, while the workers compute the next ones; a
trial is told to Optuna only after its files are on disk and its runs are in MLflow, so a resumed hunt
never loses a told trial's runs. The tables are updated per trial at a cost independent of the hunt's
length (:mod:`study.search.tables`); the writer times each trial (:class:`Stopwatch`). Where L* is
unknown the labels are settled before anything is stored (:mod:`study.search.labels`), so the trial
files carry final labels and the tables copy them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import optuna
import pandas as pd

from study.record import RunBatch, load_arrays, save_trial, trial_frame, trial_stem
from study.record.files import read_csv, write_csv
from study.search.hunt_study import AskedTrial, configuration_key, objective_names, trial_row
from study.search.labels import BEST_ATTR, ConfigurationLabels, Relabelled, Verify
from study.search.objectives import objective_value, summary_metrics, trial_summary
from study.search.tables import HuntTables, Stopwatch
from study.spec import HuntSpec


class Tracker(Protocol):
    """What the driver asks of a result sink (MLflow, or nothing for the benchmark's baseline)."""

    seconds: float
    runs_logged: int

    def trial_run(self, seed_base: int, trial_number: int, values: dict[str, Any]) -> str: ...

    def log_runs(
        self,
        trial_run_id: str,
        batch: RunBatch,
        *,
        seed_base: int,
        trial_number: int,
        values: dict[str, Any],
        config: dict[str, Any],
    ) -> int: ...

    def update_runs(
        self, batch: RunBatch, *, seed_base: int, trial_number: int, values: dict[str, Any]
    ) -> int: ...

    def finish_trial(
        self, run_id: str, *, metrics: dict[str, float], failed: str | None = None, pruned: bool = False
    ) -> None: ...


def error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:2000]


@dataclass(frozen=True)
class TrialOutcome:
    """What finishing a trial produced: the row shown to the user, counterexamples found (re-verified;
    certified spurious minima when the hunt does not re-verify)."""

    row: dict[str, Any]
    counterexamples: int


class TrialWriter:
    """Writes, logs and tells finished trials; one thread, so trials are told in the order they end."""

    def __init__(
        self,
        study: optuna.Study,
        spec: HuntSpec,
        tracker: Tracker,
        out: Path,
        tables: HuntTables,
        *,
        verify: Verify | None = None,
        stopwatch: Stopwatch | None = None,
    ) -> None:
        """``verify``: re-verifies runs as follow-up tasks (the pool's), for labels where L* is unknown.
        ``stopwatch``: the hunt's (per-trial timings and the account's stages; a new one by default)."""
        self.study, self.spec, self.tracker, self.out, self.tables = study, spec, tracker, out, tables
        self.labels = ConfigurationLabels(out, gap_tol=spec.diagnostics.gap_tol, verify=verify)
        self.labels.resume(study)
        self.stopwatch = stopwatch or Stopwatch()
        self._names = objective_names(study)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish-trial")
        self._futures: list[Future[TrialOutcome]] = []
        self._notes: list[Future[None]] = []  # rows of trials told elsewhere (rejected at ask)

    def submit(
        self,
        asked: AskedTrial,
        outcome: list[RunBatch] | BaseException,
        started: float,
        *,
        pruned: bool = False,
        previous: list[int] | None = None,
    ) -> None:
        """Finish a trial on the writer's thread. ``pruned``: its runs so far, told PRUNED. ``previous``:
        numbers of earlier trials of the same configuration whose runs are pooled into the told value
        (finished by now: this thread finishes trials in the order they were handed over)."""
        arrived = time.perf_counter()
        self._futures.append(
            self._thread.submit(
                self.finish, asked, outcome, started, pruned=pruned, previous=previous or [], arrived=arrived
            )
        )

    def skip(self, asked: AskedTrial, previous: list[int]) -> None:
        """A configuration evaluated before (``repeats: skip``): told the latest value again, no runs."""
        self._futures.append(self._thread.submit(self._skip, asked, previous, time.perf_counter()))

    def rejected(self, trial: optuna.trial.Trial) -> None:
        """A trial told FAIL at ask (its configuration rejected by the landscape): its row, in order."""
        row = trial_row(trial.number, "FAIL", trial.params, None, trial.user_attrs, self._names)
        self._notes.append(self._thread.submit(self.tables.add_trial, row))

    def _trials(self, numbers: list[int]) -> list[optuna.trial.FrozenTrial]:
        if not numbers:
            return []
        wanted = set(numbers)
        return [t for t in self.study.get_trials(deepcopy=False) if t.number in wanted]

    def _tables(
        self,
        trial: optuna.trial.Trial,
        state: str,
        values: list[float] | None,
        arrived: float,
        started: float,
        **attrs: Any,
    ) -> None:
        """Add a told trial's row to trials.csv (its runs are in runs.csv already) and time the trial."""
        tables_started = time.perf_counter()
        with self.stopwatch.timed("tables_files"):
            self.tables.add_trial(trial_row(trial.number, state, trial.params, values, attrs, self._names))
        self.stopwatch.record(trial.number, arrived, started, tables_started)

    def _skip(self, asked: AskedTrial, previous: list[int], arrived: float) -> TrialOutcome:
        started = time.perf_counter()
        trial = asked.trial
        summary = json.dumps({"runs": 0, "counts": {}, "certified_spurious": 0})
        with self.stopwatch.timed("optuna"):
            last, state, told, reason = self._tell_repeat(trial, previous, summary)
        self._tables(trial, state, told, arrived, started, summary=summary, fail_reason=reason)
        return TrialOutcome({"number": trial.number, "state": state, "repeat_of": last.number}, 0)

    def _tell_repeat(
        self, trial: optuna.trial.Trial, previous: list[int], summary: str
    ) -> tuple[optuna.trial.FrozenTrial, str, list[float] | None, str]:
        """Tell a repeated configuration what its latest trial was told; returns that trial, the state,
        the values told and the failure's reason."""
        last = max(self._trials(previous), key=lambda t: t.number)
        trial.set_user_attr("repeat_of", last.number)
        trial.set_user_attr("summary", summary)
        if last.state == optuna.trial.TrialState.COMPLETE and last.values is not None:
            self.study.tell(trial, list(last.values))
            return last, "COMPLETE", list(last.values), ""
        if last.state == optuna.trial.TrialState.PRUNED:  # a pruned configuration stays pruned
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return last, "PRUNED", None, ""
        reason = f"repeat of trial {last.number}, which failed"
        trial.set_user_attr("fail_reason", reason)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return last, "FAIL", None, reason

    def collect(self, *, wait: bool) -> list[TrialOutcome]:
        """Outcomes of trials finished since the last call (all pending ones when ``wait``)."""
        ready = [f for f in self._futures if wait or f.done()]
        for future in ready:
            self._futures.remove(future)
        return [f.result() for f in ready]

    @property
    def pending(self) -> int:
        """Trials handed over and not yet logged and told."""
        return sum(not f.done() for f in self._futures)

    def close(self) -> None:
        """Finish every trial already handed over (also when the hunt is interrupted)."""
        self._thread.shutdown(wait=True)
        for note in self._notes:
            note.result()
        self._notes.clear()

    def finish(
        self,
        asked: AskedTrial,
        outcome: list[RunBatch] | BaseException,
        started: float,
        *,
        pruned: bool = False,
        previous: list[int] | None = None,
        arrived: float | None = None,
    ) -> TrialOutcome:
        begun = time.perf_counter()
        arrived = begun if arrived is None else arrived
        trial = asked.trial
        timed = self.stopwatch.timed
        with timed("mlflow"):
            run_id = self.tracker.trial_run(asked.seed_base, trial.number, asked.values)
        if isinstance(outcome, BaseException):
            reason = error_line(outcome)
            with timed("optuna"):
                trial.set_user_attr("fail_reason", reason)
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            with timed("mlflow"):
                self.tracker.finish_trial(run_id, metrics={}, failed=reason)
            self._tables(trial, "FAIL", None, arrived, begun, fail_reason=reason)
            return TrialOutcome({"number": trial.number, "state": "FAIL", "fail_reason": reason}, 0)
        batch = RunBatch.concat(outcome)
        frame = trial_frame(
            batch,
            trial=trial.number,
            seed_base=asked.seed_base,
            values=asked.values,
            landscape=asked.run_spec.landscape,
        )
        # where L* is unknown: labelled against the configuration's best, earlier trials of it relabelled
        # when that best drops, and every new candidate re-verified, before anything is stored
        with timed("labels"):
            frame, moved = self.labels.settle(
                asked.values,
                asked.run_spec,
                frame,
                batch.theta,
                batch.theta0,
                seed_base=asked.seed_base,
                trial=trial.number,
            )
        batch = dataclasses.replace(batch, frame=frame)
        for earlier in moved:
            self._rewrite(earlier, asked.values)
        if moved:  # their rows in runs.csv carry the old labels: rebuilt once at the end
            self.tables.relabelled([earlier.seed_base for earlier in moved])
        with timed("tables_files"):
            trial_csv = save_trial(self.out, frame, batch, seed_base=asked.seed_base)
        self._account_work(frame)
        with timed("mlflow"):
            self.tracker.log_runs(
                run_id,
                batch,
                seed_base=asked.seed_base,
                trial_number=trial.number,
                values=asked.values,
                config=asked.run_spec.flat_config(),
            )
        with timed("optuna"):
            earlier_trials = self._trials(previous or [])
        with timed("tables_files"):  # their trial files
            pooled = self._pooled(frame, earlier_trials)
        values = [objective_value(o, pooled, asked.values) for o in self.spec.objective]
        summary = trial_summary(frame)
        state = "PRUNED" if pruned else "COMPLETE"
        with timed("optuna"):
            trial.set_user_attr("summary", json.dumps(summary))
            trial.set_user_attr("seconds", time.perf_counter() - started)
            best = self.labels.best.get(configuration_key(asked.values), math.nan)
            if math.isfinite(best):
                trial.set_user_attr(BEST_ATTR, best)
            if previous:
                trial.set_user_attr("repeat_of", max(previous))
                trial.set_user_attr("pooled_runs", len(pooled))
            if pruned:
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                self.study.tell(trial, values)
        metrics = {f"objective_{o}": v for o, v in zip(self.spec.objective, values, strict=True)}
        metrics.update({f"count_{k}": float(v) for k, v in summary["counts"].items()})
        metrics["certified_spurious"] = float(summary["certified_spurious"])
        metrics.update(summary_metrics(summary["runs"], summary["counterexamples"]))
        with timed("mlflow"):
            self.tracker.finish_trial(run_id, metrics=metrics, pruned=pruned)
        tables_started = time.perf_counter()
        told = None if pruned else values
        attrs = {"summary": json.dumps(summary)}
        with timed("tables_files"):
            self.tables.add_runs(trial_csv)
            self.tables.add_trial(trial_row(trial.number, state, trial.params, told, attrs, self._names))
        self.stopwatch.record(trial.number, arrived, begun, tables_started)
        row = {"number": trial.number, "state": state, **asked.values, **summary}
        return TrialOutcome(row, int(summary["counterexamples"]))

    def _account_work(self, frame: pd.DataFrame) -> None:
        """The workers' training and diagnosis of a saved trial, as its file has them (per-run averages of
        each chunk, so their sum over the rows is the chunks' seconds)."""
        if not {"train_seconds_per_run", "seconds_per_run"} <= set(frame.columns):
            return
        train = frame["train_seconds_per_run"].to_numpy(dtype=float)
        whole = frame["seconds_per_run"].to_numpy(dtype=float)
        self.stopwatch.add("train", float(np.nansum(train)))
        self.stopwatch.add("classify_certify", float(np.nansum(whole - train)))

    def _pooled(self, frame: pd.DataFrame, previous: list[optuna.trial.FrozenTrial]) -> pd.DataFrame:
        """This trial's runs and those of earlier trials of the same configuration (``accumulate``)."""
        frames = [frame]
        for t in previous:
            seed_base = int(t.user_attrs.get("seed_base", t.number))
            earlier = read_csv(self.out / "trials" / f"{trial_stem(seed_base)}.csv")
            if earlier is not None and len(earlier):
                frames.append(earlier)
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frame

    def _rewrite(self, earlier: Relabelled, values: dict[str, Any]) -> None:
        """Store an earlier trial's new labels: its CSV (its arrays do not change) and, in MLflow, its runs
        whose class or verdict changed."""
        with self.stopwatch.timed("tables_files"):
            write_csv(earlier.frame, self.out / "trials" / f"{trial_stem(earlier.seed_base)}.csv")
            if not earlier.changed:
                return
            rows = earlier.changed
            arrays = load_arrays(self.out, trial_stem(earlier.seed_base))
        batch = RunBatch(
            frame=earlier.frame.iloc[rows].reset_index(drop=True),
            theta=arrays["theta"][rows],
            theta0=arrays["theta0"][rows],
            eigenvalues=arrays["eigenvalues"][rows],
            curve_steps=arrays["curve_steps"],
            curve=arrays["curve"][rows],
            train_span=np.full((len(rows), 2), np.nan),  # not read: update_runs keeps the logged times
        )
        with self.stopwatch.timed("mlflow"):
            self.tracker.update_runs(
                batch, seed_base=earlier.seed_base, trial_number=earlier.trial, values=values
            )
