"""Finishing a trial: write its record files, log its runs, tell Optuna, refresh the hunt's tables.

Trials are finished on one background thread, in order, while the workers compute the next ones; a
trial is told to Optuna only after its files are on disk and its runs are in MLflow, so a resumed hunt
never loses a told trial's runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna

from study.diagnostics.critical import relabel_unknown_optimum
from study.record import RunBatch, save_trial, trial_frame, write_tables
from study.search.hunt_study import AskedTrial, trials_table
from study.search.objectives import objective_value, summary_metrics, trial_summary
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

    def finish_trial(self, run_id: str, *, metrics: dict[str, float], failed: str | None = None) -> None: ...


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

    def __init__(self, study: optuna.Study, spec: HuntSpec, tracker: Tracker, out: Path) -> None:
        self.study, self.spec, self.tracker, self.out = study, spec, tracker, out
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish-trial")
        self._futures: list[Future[TrialOutcome]] = []

    def submit(self, asked: AskedTrial, outcome: list[RunBatch] | BaseException, started: float) -> None:
        self._futures.append(self._thread.submit(self.finish, asked, outcome, started))

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

    def finish(
        self, asked: AskedTrial, outcome: list[RunBatch] | BaseException, started: float
    ) -> TrialOutcome:
        trial = asked.trial
        run_id = self.tracker.trial_run(asked.seed_base, trial.number, asked.values)
        if isinstance(outcome, BaseException):
            reason = error_line(outcome)
            trial.set_user_attr("fail_reason", reason)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.tracker.finish_trial(run_id, metrics={}, failed=reason)
            self.refresh_tables()
            return TrialOutcome({"number": trial.number, "state": "FAIL", "fail_reason": reason}, 0)
        batch = RunBatch.concat(outcome)
        frame = trial_frame(
            batch,
            trial=trial.number,
            seed_base=asked.seed_base,
            values=asked.values,
            landscape=asked.run_spec.landscape,
        )
        # where L* is unknown, every run of the trial is labelled against the trial's best, not its chunk's
        frame = relabel_unknown_optimum(frame, gap_tol=asked.run_spec.diagnostics.gap_tol, by=[])
        batch = dataclasses.replace(batch, frame=frame)
        save_trial(self.out, frame, batch, seed_base=asked.seed_base)
        self.tracker.log_runs(
            run_id,
            batch,
            seed_base=asked.seed_base,
            trial_number=trial.number,
            values=asked.values,
            config=asked.run_spec.flat_config(),
        )
        values = [objective_value(o, frame, asked.values) for o in self.spec.objective]
        summary = trial_summary(frame)
        trial.set_user_attr("summary", json.dumps(summary))
        trial.set_user_attr("seconds", time.perf_counter() - started)
        self.study.tell(trial, values)
        metrics = {f"objective_{o}": v for o, v in zip(self.spec.objective, values, strict=True)}
        metrics.update({f"count_{k}": float(v) for k, v in summary["counts"].items()})
        metrics["certified_spurious"] = float(summary["certified_spurious"])
        metrics.update(summary_metrics(summary["runs"], summary["counterexamples"]))
        self.tracker.finish_trial(run_id, metrics=metrics)
        self.refresh_tables()
        row = {"number": trial.number, "state": "COMPLETE", **asked.values, **summary}
        return TrialOutcome(row, int(summary["counterexamples"]))

    def refresh_tables(self) -> None:
        """Keep ``runs.csv`` and ``trials.csv`` current after every finished trial."""
        relabel = functools.partial(relabel_unknown_optimum, gap_tol=self.spec.diagnostics.gap_tol)
        write_tables(self.out, trials_table(self.study), relabel=relabel)
