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

        finished, experiment_id = RunStatus.to_string(RunStatus.FINISHED), int(self.experiment_id)
        run_rows: list[tuple[Any, ...]] = []
        tag_rows: list[tuple[str, str, str]] = []
        param_rows: list[tuple[str, str, str]] = []
        metric_rows: list[tuple[Any, ...]] = []
        latest_rows: list[tuple[Any, ...]] = []
        logged = []
        sanitize = self.store.sanitize_metric_value  # as log_batch does: inf -> +-1.8e308, NaN -> is_nan
        for r in runs:
            run_id = uuid.uuid4().hex
            logged.append(LoggedRun(run_id, f"{self.location}/{run_id}/artifacts"))
            run_rows.append(
                (run_id, r.tags["mlflow.runName"], "UNKNOWN", "", "", "minima-hunt", finished)
                + (r.start_time, r.end_time, None, "", "active", logged[-1].artifact_uri, experiment_id)
            )
            tag_rows.extend((k, v, run_id) for k, v in r.tags.items())
            param_rows.extend((k, str(v)[:MAX_PARAM], run_id) for k, v in r.params.items())
            points = [(k, 0, v) for k, v in r.metrics.items() if v is not None]
            points += [("loss_curve", step, v) for step, v in r.curve]
            last: dict[str, tuple[Any, ...]] = {}
            for key, step, value in points:
                is_nan, stored = sanitize(float(value))
                row = (key, stored, now, step, is_nan, run_id)
                metric_rows.append(row)
                if key not in last or step >= last[key][3]:
                    last[key] = row
            latest_rows.extend(last.values())
        with self.store.ManagedSessionMaker() as session:
            connection = session.connection()
            for model, columns, rows in (
                (SqlRun, RUN_COLUMNS, run_rows),
                (SqlTag, KEY_VALUE_COLUMNS, tag_rows),
                (SqlParam, KEY_VALUE_COLUMNS, param_rows),
                (SqlMetric, METRIC_COLUMNS, metric_rows),
                (SqlLatestMetric, METRIC_COLUMNS, latest_rows),
            ):
                if rows:
                    _insert_many(connection, model.__table__, columns, rows)
        return logged


# the columns of MLflow's tables, in the order SqlWriter builds their rows
RUN_COLUMNS = (
    *("run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status"),
    *("start_time", "end_time", "deleted_time", "source_version", "lifecycle_stage", "artifact_uri"),
    "experiment_id",
)
KEY_VALUE_COLUMNS = ("key", "value", "run_uuid")
METRIC_COLUMNS = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")


def _insert_many(connection: Any, table: Any, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """``INSERT`` of ``rows`` (values in the order of ``columns``) as one DB-API ``executemany``: the
    statement compiled by SQLAlchemy for the connection's dialect, the values passed as they are
    (SQLAlchemy's per-row parameter processing took a third of the writer's time; the values here are
    plain str, int, float, bool and None, which every driver takes)."""
    compiled = table.insert().compile(dialect=connection.dialect, column_keys=list(columns))
    order = compiled.positiontup  # None for named parameter styles (psycopg2: %(key)s)
    params: list[Any]
    if order is None:
        params = [dict(zip(columns, row, strict=True)) for row in rows]
    elif tuple(order) == columns:
        params = rows
    else:
        where = [columns.index(name) for name in order]
        params = [tuple(row[i] for i in where) for row in rows]
    connection.exec_driver_sql(str(compiled), params)


def make_writer(client: MlflowClient, experiment_id: str, tracking_uri: str, kind: str = "auto") -> RunWriter:
    """``sql`` (database stores only), ``api``, or ``auto``: sql for a database URI, else api."""
    scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0]
    if kind == "sql" or (kind == "auto" and scheme in SQL_SCHEMES):
        return SqlWriter(client, experiment_id, tracking_uri)
    return ApiWriter(client, experiment_id)
