"""A hunt tracked through a real MLflow server (backend store in PostgreSQL): the tracker's HTTP path
logs one run per training run, read back through the REST API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from study.search.driver import HuntOptions, run_hunt
from study.spec import parse_pipeline
from study.telemetry import TELEMETRY_OFF
from tests.cluster.conftest import free_port, stop_process_group, tiny_pipeline, wait_for_mlflow


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


@pytest.fixture
def mlflow_server(tmp_path, pg_url):
    """`mlflow server` on 127.0.0.1:<free port>, one worker, backend store in PostgreSQL."""
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")  # noqa: SIM115 - closed below
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"{pg_url}/mlflow_test",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--allowed-hosts",
        f"127.0.0.1:{port},localhost:{port}",
    ]
    env = {**os.environ, **TELEMETRY_OFF}
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_mlflow(server, url, tmp_path / "mlflow-server.log", "mlflow server")
        yield url
    finally:
        stop_process_group(server)
        log.close()


@pytest.mark.postgres
def test_hunt_through_a_tracking_server_logs_one_run_per_training_run(tmp_path, mlflow_server, ray_local):
    spec = parse_pipeline(tiny_pipeline("http_hunt"))
    out = tmp_path / "hunt"
    table = run_hunt(spec, HuntOptions(out=out, tracking_uri=mlflow_server, progress=False))
    assert list(table["state"]) == ["COMPLETE"] * 2

    api = f"{mlflow_server}/api/2.0/mlflow"
    experiment = json.loads(_get(f"{api}/experiments/get-by-name?experiment_name={spec.name}"))
    experiment_id = experiment["experiment"]["experiment_id"]
    found = _post(
        f"{api}/runs/search",
        {
            "experiment_ids": [experiment_id],
            "filter": "tags.`minima_hunt.kind` = 'run'",
            "max_results": 1000,
        },
    )
    runs = found.get("runs", [])
    csv = pd.read_csv(out / "runs.csv")
    assert len(runs) == len(csv) == 2 * spec.runs_per_trial

    seeds = []
    for run in runs:
        metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
        for metric in ("loss", "loss_gap", "grad_norm", "lambda_min", "lambda_max", "n_negative", "steps"):
            assert metric in metrics
        assert tags["critical_point"] in (
            "global_minimum",
            "spurious_minimum",
            "saddle",
            "degenerate",
            "not_converged",
            "diverged",
        )
        assert tags["certified"] in ("true", "false")
        assert run["info"]["status"] == "FINISHED"
        seeds.append(int(params["seed"]))
    assert sorted(seeds) == sorted(csv["seed"])  # one run per training run, none twice

    # the hunt's parent run and one run per trial, too
    kinds = _post(
        f"{api}/runs/search",
        {"experiment_ids": [experiment_id], "filter": "tags.`minima_hunt.kind` != 'run'", "max_results": 100},
    )
    counts = pd.Series(
        [t["value"] for r in kinds["runs"] for t in r["data"]["tags"] if t["key"] == "minima_hunt.kind"]
    )
    assert counts.value_counts().to_dict() == {"trial": 2, "hunt": 1}

    # artifacts go through the server (proxied), to its destination, never to a path of the hunt's
    assert experiment["experiment"]["artifact_location"].startswith("mlflow-artifacts:")
    from mlflow.tracking import MlflowClient

    note = tmp_path / "note.txt"
    note.write_text("through the server")
    MlflowClient(tracking_uri=mlflow_server).log_artifact(
        runs[0]["info"]["run_id"], str(note), "counterexample"
    )
    stored = list((tmp_path / "artifacts").rglob("note.txt"))
    assert [p.read_text() for p in stored] == ["through the server"]
    assert not (out / "mlartifacts").exists()
