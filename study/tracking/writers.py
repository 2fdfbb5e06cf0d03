"""Two ways to write a trial's training runs to MLflow, held to one contract (tests/tracking/test_writers):
for the same runs, ``MlflowClient.search_runs`` returns identical params, metrics (inf and NaN included),
tags, statuses, start and end times (the run's training span) and loss-curve histories.

* :class:`ApiWriter`: MLflow's public client, three calls per run (``create_run`` with its tags, one
  ``log_batch`` with its params and metrics as far as MLflow's limits allow, ``set_terminated``); works with
  every store, tracking servers included.
* :class:`SqlWriter`: a database store (SQLite, PostgreSQL) written in one transaction: one ``executemany``
  per table of MLflow's own store models (their insert statements compiled by SQLAlchemy for the store's
  dialect), with MLflow's own metric sanitizing (inf -> +-1.8e308, NaN -> is_nan); measured faster by
  ``study bench tracking`` (docs/RESULTS.md).

Both return, per run written and in order, its run id and artifact URI (where its artifacts go).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

MAX_PARAM = 6000
# MLflow's limits on one log_batch call (mlflow.utils.validation): entities in all, and params per call
MAX_BATCH, MAX_BATCH_PARAMS = 1000, 100
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


@dataclass(frozen=True)
class RunToLog:
    """One training run as MLflow stores it: tags (``mlflow.runName`` names it), params, scalar metrics
    at step 0 (None: not logged), the stepped loss curve ``[(step, value), ...]``, and when its training
    started and ended (milliseconds since the epoch: the run's start and end time, its duration in the UI)."""

    tags: dict[str, str]
    params: dict[str, Any]
    metrics: dict[str, float | None]
    curve: list[tuple[int, float]]
    start_time: int
    end_time: int


@dataclass(frozen=True)
class LoggedRun:
    """Where a written run is: its MLflow run id and artifact URI."""

    run_id: str
    artifact_uri: str


class RunWriter(Protocol):
    def write(self, runs: list[RunToLog], *, now: int) -> list[LoggedRun]: ...


class ApiWriter:
    """MLflow's public client, run by run, each in as few calls as MLflow's batch limits allow."""

    def __init__(self, client: MlflowClient, experiment_id: str) -> None:
        self.client, self.experiment_id = client, experiment_id

    def write(self, runs: list[RunToLog], *, now: int) -> list[LoggedRun]:
        logged = []
        for r in runs:
            run = self.client.create_run(
                self.experiment_id,
                start_time=r.start_time,
                run_name=r.tags["mlflow.runName"],
                tags={k: v for k, v in r.tags.items() if k != "mlflow.runName"},
            )
            run_id = run.info.run_id
            metrics = [Metric(k, v, now, 0) for k, v in r.metrics.items() if v is not None]
            metrics += [Metric("loss_curve", v, now, s) for s, v in r.curve]
            params = [Param(k, str(v)[:MAX_PARAM]) for k, v in r.params.items()]
            while params or metrics:  # one call for a run's params and metrics when they fit
                some_params, params = params[:MAX_BATCH_PARAMS], params[MAX_BATCH_PARAMS:]
                room = MAX_BATCH - len(some_params)
                some_metrics, metrics = metrics[:room], metrics[room:]
                self.client.log_batch(run_id, params=some_params, metrics=some_metrics)
            self.client.set_terminated(run_id, end_time=r.end_time)
            logged.append(LoggedRun(run_id, run.info.artifact_uri))
        return logged


class SqlWriter:
    """All runs of a trial in one transaction on a database store."""

    def __init__(self, client: MlflowClient, experiment_id: str, tracking_uri: str) -> None:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        self.client, self.experiment_id = client, experiment_id
        location = client.get_experiment(experiment_id).artifact_location
        self.location = location
        self.store = SqlAlchemyStore(tracking_uri, location)

    def write(self, runs: list[RunToLog], *, now: int) -> list[LoggedRun]:
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag

        rows: dict[Any, list[dict[str, Any]]] = {m: [] for m in (SqlRun, SqlTag, SqlParam, SqlMetric)}
        latest: list[dict[str, Any]] = []
        logged = []
        for r in runs:
            run_id = uuid.uuid4().hex
            logged.append(LoggedRun(run_id, f"{self.location}/{run_id}/artifacts"))
            rows[SqlRun].append(
                {
                    "run_uuid": run_id,
                    "name": r.tags["mlflow.runName"],
                    "source_type": "UNKNOWN",
                    "source_name": "",
                    "entry_point_name": "",
                    "user_id": "minima-hunt",
                    "status": RunStatus.to_string(RunStatus.FINISHED),
                    "start_time": r.start_time,
                    "end_time": r.end_time,
                    "deleted_time": None,
                    "source_version": "",
                    "lifecycle_stage": "active",
                    "artifact_uri": logged[-1].artifact_uri,
                    "experiment_id": int(self.experiment_id),
                }
            )
            rows[SqlTag].extend({"key": k, "value": v, "run_uuid": run_id} for k, v in r.tags.items())
            rows[SqlParam].extend(
                {"key": k, "value": str(v)[:MAX_PARAM], "run_uuid": run_id} for k, v in r.params.items()
            )
            points = [(k, 0, v) for k, v in r.metrics.items() if v is not None]
            points += [("loss_curve", step, v) for step, v in r.curve]
            last: dict[str, dict[str, Any]] = {}
            for key, step, value in points:
                is_nan, stored = self.store.sanitize_metric_value(float(value))  # as log_batch does
                row = {
                    "key": key,
                    "value": stored,
                    "timestamp": now,
                    "step": step,
                    "is_nan": is_nan,
                    "run_uuid": run_id,
                }
                rows[SqlMetric].append(row)
                if key not in last or step >= last[key]["step"]:
                    last[key] = row
            latest.extend(last.values())
        with self.store.ManagedSessionMaker() as session:
            connection = session.connection()
            for model, table_rows in (*rows.items(), (SqlLatestMetric, latest)):
                if table_rows:
                    _insert_many(connection, model.__table__, table_rows)
        return logged


def _insert_many(connection: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """``INSERT`` of ``rows`` (dicts with the same keys) as one DB-API ``executemany``: the statement
    compiled by SQLAlchemy for the connection's dialect, the values passed as they are (SQLAlchemy's
    per-row parameter processing took a third of the writer's time; the values here are plain str, int,
    float and bool, which every driver takes)."""
    columns = list(rows[0])
    compiled = table.insert().compile(dialect=connection.dialect, column_keys=columns)
    order = compiled.positiontup  # None for named parameter styles
    if order is None:
        params: list[Any] = rows
    else:
        params = [tuple(row[name] for name in order) for row in rows]
    connection.exec_driver_sql(str(compiled), params)


def make_writer(client: MlflowClient, experiment_id: str, tracking_uri: str, kind: str = "auto") -> RunWriter:
    """``sql`` (database stores only), ``api``, or ``auto``: sql for a database URI, else api."""
    scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0]
    if kind == "sql" or (kind == "auto" and scheme in SQL_SCHEMES):
        return SqlWriter(client, experiment_id, tracking_uri)
    return ApiWriter(client, experiment_id)
