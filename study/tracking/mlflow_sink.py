"""MLflow layout: one experiment per pipeline, a parent run per hunt, a child run per trial, and one run
per training run nested under its trial.

Every training run carries a stable key ``hunt/seed_base/seed`` as a tag; a trial's runs are logged
only if their keys are not there yet, so a retried task or a resumed hunt never logs a run twice.
Training runs are written by one of the writers of :mod:`study.tracking.writers` (one transaction on a
database store, or the public client run by run), held to one contract.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from study.diagnostics.verify import VERDICT_TAG
from study.record import CriticalPoint, RunBatch, is_counterexample, loss_history
from study.record.schema import HYPOTHESIS_PREFIX, META_COLUMNS, PARAM_PREFIX, TRIAL_COLUMNS
from study.reports.hunt import hunt_name
from study.tracking import naming
from study.tracking.artifacts import Counterexample, write_counterexamples
from study.tracking.links import EXPERIMENT_KIND_TAG, MODEL_TRAINING
from study.tracking.sqlite_store import create_store
from study.tracking.writers import LoggedRun, RunToLog, make_writer

if TYPE_CHECKING:
    from study.reports.report import Report

TAG_HUNT = "minima_hunt.hunt"
TAG_KIND = "minima_hunt.kind"  # hunt | trial | run
TAG_SEED_BASE = "minima_hunt.seed_base"
TAG_RUN_KEY = "minima_hunt.run_key"
PARENT = "mlflow.parentRunId"
RUN_METRICS = ("loss", "loss_gap", "grad_norm", "lambda_min", "lambda_max", "n_negative", "steps")
# Bookkeeping columns of the run record logged as parameters, not metrics (they measure the run's
# cost and settings, not its end point); trial, seed_base and param_* are tags and params already.
BOOKKEEPING_PARAMS = ("train_seconds_per_run", "seconds_per_run", "final_lr", "device")
NOT_METRICS = frozenset(("seed", *TRIAL_COLUMNS, *META_COLUMNS, *BOOKKEEPING_PARAMS))
NOTE = "mlflow.note.content"  # the run's description in the UI


def default_tracking_uri(out: Path) -> str:
    return f"sqlite:///{(out / 'mlflow.db').resolve()}"


def _metric_value(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


class HuntTracker:
    """Writes a hunt to MLflow; only the driver uses it."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        hunt: str,
        *,
        artifact_root: Path | None = None,
        writer: str = "auto",
    ):
        create_store(tracking_uri)  # whole, if missing: MLflow would migrate it in place, unlocked
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.hunt = hunt
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = artifact_root.resolve().as_uri() if artifact_root is not None else None
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
            )
        else:
            self.experiment_id = found.experiment_id
            if EXPERIMENT_KIND_TAG not in found.tags:  # created by an older version
                self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        self.writer = make_writer(self.client, self.experiment_id, tracking_uri, writer)
        self.hunt_run_id = ""
        self.seconds = 0.0  # wall time spent writing training runs (log_runs), for the benchmark
        self.runs_logged = 0

    # ---- hunt and trial runs ----------------------------------------------------------------------
    def _find(self, filter_string: str) -> list[Any]:
        return list(
            self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=50_000)
        )

    def start_hunt(self, params: dict[str, Any]) -> str:
        """The hunt's parent run: reused when the same hunt resumes."""
        found = self._find(f"tags.`{TAG_HUNT}` = '{self.hunt}' and tags.`{TAG_KIND}` = 'hunt'")
        if found:
            self.hunt_run_id = found[0].info.run_id
            self.client.update_run(self.hunt_run_id, status="RUNNING")
            return self.hunt_run_id
        run = self.client.create_run(
            self.experiment_id, run_name=f"hunt-{self.hunt}", tags={TAG_HUNT: self.hunt, TAG_KIND: "hunt"}
        )
        self.hunt_run_id = run.info.run_id
        self.client.log_batch(self.hunt_run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        return self.hunt_run_id

    def trial_run(self, seed_base: int, trial_number: int, values: dict[str, Any]) -> str:
        """The trial's run, nested under the hunt (reused for a re-run of an interrupted trial)."""
        found = self._find(
            f"tags.`{TAG_HUNT}` = '{self.hunt}' and tags.`{TAG_KIND}` = 'trial' "
            f"and tags.`{TAG_SEED_BASE}` = '{seed_base}'"
        )
        if found:
            return str(found[0].info.run_id)
        run = self.client.create_run(
            self.experiment_id,
            run_name=naming.trial_name(trial_number, values),
            tags={
                TAG_HUNT: self.hunt,
                TAG_KIND: "trial",
                TAG_SEED_BASE: str(seed_base),
                PARENT: self.hunt_run_id,
                "optuna.trial": str(trial_number),
            },
        )
        params = [Param(k, str(v)[:6000]) for k, v in values.items()]
        self.client.log_batch(run.info.run_id, params=params)
        return str(run.info.run_id)

    def logged_keys(self, seed_base: int) -> set[str]:
        found = self._find(
            f"tags.`{TAG_HUNT}` = '{self.hunt}' and tags.`{TAG_KIND}` = 'run' "
            f"and tags.`{TAG_SEED_BASE}` = '{seed_base}'"
        )
        return {r.data.tags.get(TAG_RUN_KEY, "") for r in found}

    def finish_trial(
        self, run_id: str, *, metrics: dict[str, float], failed: str | None = None, pruned: bool = False
    ) -> None:
        """Close a trial's run: FAILED with its reason, KILLED and tagged ``optuna.state = PRUNED`` when
        pruned (its metrics count the runs it finished), else FINISHED."""
        now = int(time.time() * 1000)
        clean = [
            Metric(k, float(v), now, 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        tags = [RunTag("fail_reason", failed[:5000])] if failed else []
        state = "FAIL" if failed else "PRUNED" if pruned else "COMPLETE"
        tags.append(RunTag("optuna.state", state))
        self.client.log_batch(run_id, metrics=clean, tags=tags)
        status = "FAILED" if failed else "KILLED" if pruned else "FINISHED"
        self.client.set_terminated(run_id, status=status)

    def finish_hunt(self, *, status: str = "FINISHED", metrics: dict[str, float] | None = None) -> None:
        """End the hunt's run with its summary metrics (runs, counterexamples, rate and interval)."""
        if not self.hunt_run_id:
            return
        now = int(time.time() * 1000)
        clean = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if math.isfinite(float(v))]
        if clean:
            self.client.log_batch(self.hunt_run_id, metrics=clean)
        self.client.set_terminated(self.hunt_run_id, status=status)

    # ---- training runs -------------------------------------------------------------------------
    def log_runs(
        self,
        trial_run_id: str,
        batch: RunBatch,
        *,
        seed_base: int,
        trial_number: int,
        values: dict[str, Any],
        config: dict[str, Any],
    ) -> int:
        """Log one MLflow run per training run of a trial (skipping keys already logged); returns how
        many were written. Certified spurious minima also get weights, initialization, spectrum, certificate
        and their trial's family plot (:mod:`study.tracking.artifacts`)."""
        with self._timed():
            already = self.logged_keys(seed_base)
            frame = batch.frame
            records = []
            now = int(time.time() * 1000)
            params_common = {
                **config,
                **{f"trial.{k}": v for k, v in values.items()},
                "trial.number": trial_number,
            }
            counterexample = is_counterexample(frame).to_numpy()
            for row_index, row in enumerate(frame.itertuples(index=False)):
                data = row._asdict()
                seed = int(data["seed"])
                key = f"{self.hunt}/{seed_base}/{seed}"
                if key in already:
                    continue
                tags, metrics = _described(data, values, trial_number, bool(counterexample[row_index]))
                curve = loss_history(
                    batch.curve_steps, batch.curve[row_index], int(data["steps"]), float(data["loss"])
                )
                tags.update(
                    {
                        TAG_HUNT: self.hunt,
                        TAG_KIND: "run",
                        TAG_SEED_BASE: str(seed_base),
                        TAG_RUN_KEY: key,
                        PARENT: trial_run_id,
                    }
                )
                params = {**params_common, "seed": seed}
                params.update({name: data[name] for name in BOOKKEEPING_PARAMS if name in data})
                start, end = (int(t * 1000) for t in batch.train_span[row_index])
                logged = RunToLog(tags, params, metrics, curve, start_time=start, end_time=end)
                records.append((key, logged, row_index, data))
            if not records:
                return 0
            written = self.writer.write([logged for _k, logged, _i, _d in records], now=now)
            uris = {key: run.artifact_uri for (key, *_), run in zip(records, written, strict=True)}
            self._log_counterexample_artifacts(trial_run_id, records, uris, batch, values, trial_number)
            self.runs_logged += len(records)
            return len(records)

    def update_runs(
        self,
        batch: RunBatch,
        *,
        seed_base: int,
        trial_number: int,
        values: dict[str, Any],
    ) -> int:
        """Rewrite runs logged before whose label or verdict the driver changed (a lower best of their
        configuration, :mod:`study.search.labels`): their class, verdict, name and description tags and
        their step-0 metrics (a later timestamp makes them the latest). Returns how many were updated."""
        with self._timed():
            keys = [f"{self.hunt}/{seed_base}/{int(seed)}" for seed in batch.frame["seed"]]
            found = self.runs_by_key(seed_base, keys)
            ids = {key: run.run_id for key, run in found.items()}
            now = int(time.time() * 1000)
            records: list[Any] = []
            counterexample = is_counterexample(batch.frame).to_numpy()
            for row_index, row in enumerate(batch.frame.itertuples(index=False)):
                key = keys[row_index]
                if key not in ids:
                    continue
                data = row._asdict()
                tags, metrics = _described(data, values, trial_number, bool(counterexample[row_index]))
                self.client.log_batch(
                    ids[key],
                    metrics=[Metric(k, v, now, 0) for k, v in metrics.items() if v is not None],
                    tags=[RunTag(k, v) for k, v in tags.items()],
                )
                records.append(
                    (key, RunToLog(tags, {}, metrics, [], start_time=now, end_time=now), row_index, data)
                )
            uris = {key: run.artifact_uri for key, run in found.items()}
            # relabelled runs, not the whole trial: their files, not the trial's family summary
            self._log_counterexample_artifacts(None, records, uris, batch, values, trial_number)
            return len(records)

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    def runs_by_key(self, seed_base: int, keys: list[str]) -> dict[str, LoggedRun]:
        """MLflow run ids and artifact URIs of a trial's training runs by their stable keys."""
        found = self._find(
            f"tags.`{TAG_HUNT}` = '{self.hunt}' and tags.`{TAG_KIND}` = 'run' "
            f"and tags.`{TAG_SEED_BASE}` = '{seed_base}'"
        )
        wanted = set(keys)
        return {
            r.data.tags[TAG_RUN_KEY]: LoggedRun(r.info.run_id, r.info.artifact_uri)
            for r in found
            if r.data.tags.get(TAG_RUN_KEY) in wanted
        }

    def _log_counterexample_artifacts(
        self,
        trial_run_id: str | None,
        records: list[Any],
        uris: dict[str, str],
        batch: RunBatch,
        values: dict[str, Any],
        trial_number: int,
    ) -> None:
        """Artifacts of each certified spurious minimum (:mod:`study.tracking.artifacts`); ``uris``: the
        artifact URI of each run by key; ``trial_run_id`` None when ``records`` are not the whole trial."""
        chosen = [
            Counterexample(key, i, data, uris[key])
            for key, logged, i, data in records
            if logged.tags["critical_point"] == CriticalPoint.SPURIOUS_MINIMUM
            and logged.tags["certified"] == "true"
            and key in uris
        ]
        write_counterexamples(
            self.client,
            trial_run_id,
            chosen,
            batch,
            values=values,
            trial_number=trial_number,
        )


def _described(
    data: dict[str, Any], values: dict[str, Any], trial_number: int, counterexample: bool
) -> tuple[dict[str, str], dict[str, float | None]]:
    """What a training run's row says in MLflow: its tags (class, certificate, verdict, name,
    description, hypotheses) and its scalar metrics."""
    metrics = {name: _metric_value(data.get(name)) for name in RUN_METRICS if name in data}
    for name, value in data.items():
        if (
            name not in metrics
            and name not in NOT_METRICS
            and not name.startswith(PARAM_PREFIX)
            and isinstance(value, int | float | np.number)
            and not isinstance(value, bool | np.bool_)
        ):
            metrics[name] = _metric_value(value)
    tags = {
        "critical_point": str(data["critical_point"]),
        "certified": "true" if bool(data.get("certified", False)) else "false",
        "certificate": str(data.get("certificate", ""))[:5000],
        "mlflow.runName": naming.run_name(data, values),
        NOTE: naming.description(data, values, trial=trial_number)[:5000],
        "counterexample": "true" if counterexample else "false",
    }
    for name, value in data.items():
        if name.startswith(HYPOTHESIS_PREFIX):
            tags[name] = str(bool(value)).lower()
    if data.get("verdict") and not pd.isna(data["verdict"]):  # re-verified (study.diagnostics.verify)
        tags[VERDICT_TAG] = str(data["verdict"])
        tags["verdict_reason"] = str(data.get("verdict_reason", ""))[:5000]
        tags["family"] = str(data.get("family", ""))
        by = data.get("verified_by")
        tags["verified_by"] = str(by) if isinstance(by, str) and by else "self"  # blank: verified itself
    return tags, metrics


def frame_of_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """All training runs of an experiment as a DataFrame (for reports and tests)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return pd.DataFrame()
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'run'", max_results=50_000
    )
    return pd.DataFrame(
        [
            {**r.data.metrics, **{f"tag.{k}": v for k, v in r.data.tags.items()}, "run_id": r.info.run_id}
            for r in runs
        ]
    )


# ---- the hunt's run, found again (reports are logged to it) -----------------------------------------
def hunt_run(out: Path, tracking_uri: str | None, name: str) -> tuple[Any, str]:
    """(client, run id) of the hunt's parent run, tagged minima_hunt.kind = 'hunt': in the experiment
    named after the hunt, else the only such run in the store. LookupError when there is none."""
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
    client, run_id = hunt_run(report.out, tracking_uri, name or hunt_name(report.out))
    client.log_artifacts(run_id, str(report.folder), artifact_path="report")
    return run_id
