"""One contract for both MLflow writers (as Optuna runs one suite over every storage): for the same runs,
``MlflowClient.search_runs`` returns identical params, metrics (inf and NaN included), tags, statuses and
loss-curve histories, on real SQLite stores."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient

from study.tracking.writers import ApiWriter, RunToLog, SqlWriter, make_writer

NOW = 1_700_000_000_000
RUNS = [
    RunToLog(
        tags={"mlflow.runName": f"k3-s{i}", "critical_point": "saddle", "minima_hunt.run_key": f"h/0/{i}"},
        params={"seed": i, "train.lr": 0.1, "landscape.widths": (3, 2), "long": "x" * 7000},
        metrics={
            "loss": 0.5 + i,
            "loss_gap": math.inf,
            "lambda_min": -math.inf,
            "radius": math.nan,
            "skipped": None,
            "n_negative": 1.0,
        },
        curve=[(0, 1.0), (10, 0.5), (20, 0.25 * i)],
        start_time=NOW - 60_000 + 1000 * i,
        end_time=NOW - 30_000 + 2000 * i,
    )
    for i in range(3)
]


def written(tmp_path, cls) -> tuple[MlflowClient, list]:
    uri = f"sqlite:///{tmp_path / cls.__name__}.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("contract", artifact_location=(tmp_path / "art").as_uri())
    writer = SqlWriter(client, experiment, uri) if cls is SqlWriter else ApiWriter(client, experiment)
    writer.write(RUNS, now=NOW)
    runs = client.search_runs([experiment], order_by=["attributes.run_name ASC"])
    return client, runs


def comparable(value: float) -> object:
    return "nan" if isinstance(value, float) and math.isnan(value) else value


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("writers")
    return {cls.__name__: written(tmp, cls) for cls in (ApiWriter, SqlWriter)}


def test_both_writers_store_the_same_runs(both) -> None:
    (api_client, api), (sql_client, sql) = both["ApiWriter"], both["SqlWriter"]
    assert len(api) == len(sql) == len(RUNS)
    for a, s in zip(api, sql, strict=True):
        assert a.info.run_name == s.info.run_name and a.info.status == s.info.status == "FINISHED"
        assert (a.info.start_time, a.info.end_time) == (s.info.start_time, s.info.end_time)
        assert a.data.params == s.data.params
        assert {k: comparable(v) for k, v in a.data.metrics.items()} == {
            k: comparable(v) for k, v in s.data.metrics.items()
        }
        assert {k: v for k, v in a.data.tags.items() if not k.startswith("mlflow.user")} == {
            k: v for k, v in s.data.tags.items() if not k.startswith("mlflow.user")
        }
        history_a = [(m.step, m.value) for m in api_client.get_metric_history(a.info.run_id, "loss_curve")]
        history_s = [(m.step, m.value) for m in sql_client.get_metric_history(s.info.run_id, "loss_curve")]
        assert sorted(history_a) == sorted(history_s)


def test_known_values_survive(both) -> None:
    for _, runs in both.values():
        first = runs[0]
        assert (first.info.start_time, first.info.end_time) == (NOW - 60_000, NOW - 30_000)  # its training
        assert first.data.metrics["loss"] == 0.5 and first.data.metrics["loss_curve"] == 0.0  # last step
        assert first.data.metrics["loss_gap"] == 1.7976931348623157e308  # MLflow's own inf
        assert first.data.metrics["lambda_min"] == -1.7976931348623157e308
        assert math.isnan(first.data.metrics["radius"]) and "skipped" not in first.data.metrics
        assert first.data.params["landscape.widths"] == "(3, 2)" and len(first.data.params["long"]) == 6000


def test_auto_picks_the_sql_writer_for_databases_only(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("auto")
    assert isinstance(make_writer(client, experiment, uri), SqlWriter)
    assert isinstance(make_writer(client, experiment, uri, "api"), ApiWriter)
