"""The links and commands `study hunt` prints: the MLflow runs link, `optuna-dashboard` on every storage
kind (a real dashboard answers), and a terminal free of library INFO logs."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from study.cli import main
from study.search.samplers import dashboard_command, make_storage
from study.tracking.links import (
    COUNTEREXAMPLE_FILTER,
    COUNTEREXAMPLES_VIEW,
    VIEW_TAG_PREFIX,
    runs_link,
    save_view,
    ui_base,
    ui_command,
    view_columns,
    view_link,
)
from study.tracking.mlflow_sink import default_tracking_uri
from tests.cluster.conftest import TINY, free_port


def test_runs_link_carries_the_filter_and_a_flat_order():
    url = runs_link("http://127.0.0.1:5000/", "7")
    parts = urlsplit(url)
    assert parts.netloc == "127.0.0.1:5000" and parts.path == "/"
    route, _, query = parts.fragment.partition("?")
    assert route == "/experiments/7/runs"  # the runs table, not the experiment's GenAI overview
    params = {k: v[0] for k, v in parse_qs(query).items()}
    assert params["searchFilter"] == COUNTEREXAMPLE_FILTER
    # ordered by another key than start time, the UI lists matching child runs flat
    assert params["orderByKey"] == "metrics.`loss`" and params["orderByAsc"] == "true"
    assert " " not in url


def test_view_link_opens_a_saved_view_in_the_model_training_view():
    url = view_link("http://127.0.0.1:5000/", "7", "my-view")
    route, _, query = urlsplit(url).fragment.partition("?")
    assert route == "/experiments/7/runs"
    # only the key: the UI ignores a saved view when the URL also names a filter or an order
    assert parse_qs(query) == {"viewStateShareKey": ["my-view"], "workflowType": ["machine_learning"]}


def test_saved_view_holds_the_filter_order_and_columns_as_the_ui_reads_them(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.create_experiment("views", artifact_location=(tmp_path / "a").as_uri())
    columns = view_columns(["trial.k", "trial.number", "seed", "trial.n", "train.lr"])
    assert columns == [
        "params.`trial.k`",
        "params.`trial.n`",
        "metrics.`loss`",
        "metrics.`loss_gap`",
        "metrics.`lambda_min`",
        "tags.`verdict`",
    ]
    save_view(
        client, experiment, "v", name="counterexamples", filter_string=COUNTEREXAMPLE_FILTER, columns=columns
    )
    envelope = json.loads(client.get_experiment(experiment).tags[f"{VIEW_TAG_PREFIX}v"])
    assert envelope["name"] == "counterexamples" and isinstance(envelope["createdAt"], int)
    assert json.loads(envelope["state"]) == {
        "searchFilter": COUNTEREXAMPLE_FILTER,
        "orderByKey": "metrics.`loss`",
        "orderByAsc": True,
        "selectedColumns": columns,
    }


def test_ui_base_and_command_for_local_stores_and_servers():
    assert ui_base("http://10.0.0.5:5000/") == "http://10.0.0.5:5000"
    assert ui_command("http://10.0.0.5:5000") is None
    local = "sqlite:////tmp/x/mlflow.db"
    assert ui_base(local) == "http://127.0.0.1:5000"
    assert ui_command(local) == f"mlflow ui --backend-store-uri {local} --host 127.0.0.1 --port 5000"


def _dashboard_lists(command: str, study_name: str, log: Path) -> bool:
    port = free_port()
    argv = [str(Path(sys.executable).parent / "optuna-dashboard"), *shlex.split(command)[1:]]
    argv += ["--port", str(port)]
    with open(log, "w") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.loads(response.read())["study_summaries"]
                return study_name in [s["study_name"] for s in studies]
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        return False
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)


@pytest.mark.parametrize("kind", ["default", "journal"])  # SQLite under --out; a journal file
def test_printed_dashboard_command_opens_the_study(tmp_path, kind):
    out = tmp_path / "hunt"
    url = None if kind == "default" else f"journal://{tmp_path / 'journal.log'}"
    study = optuna.create_study(study_name="dash", storage=make_storage(url, out))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    command = dashboard_command(url, out)
    assert "--host 127.0.0.1" in command
    assert _dashboard_lists(command, "dash", tmp_path / "dashboard.log"), (
        tmp_path / "dashboard.log"
    ).read_text()


def test_hunt_prints_the_link_and_no_library_info_logs(tmp_path, ray_local, capfd):
    pipeline = tmp_path / "tiny.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "links_tiny", **TINY, "trials": 1}))
    out = tmp_path / "hunt"
    assert main(["hunt", str(pipeline), "--out", str(out)]) == 0
    captured = capfd.readouterr()
    assert not re.search(r"\bINFO\b", captured.out + captured.err), captured.err
    experiment = MlflowClient(default_tracking_uri(out)).get_experiment_by_name("links_tiny")
    link = view_link("http://127.0.0.1:5000", experiment.experiment_id, COUNTEREXAMPLES_VIEW)
    assert f"counterexamples: {link}\n" in captured.out
    view = json.loads(json.loads(experiment.tags[f"{VIEW_TAG_PREFIX}{COUNTEREXAMPLES_VIEW}"])["state"])
    assert view["searchFilter"] == COUNTEREXAMPLE_FILTER  # TINY does not re-verify
    assert view["selectedColumns"][:2] == ["params.`trial.k`", "params.`trial.n`"]
    assert f"optuna-dashboard --host 127.0.0.1 sqlite:///{(out / 'optuna.db').resolve()}" in captured.out


def test_the_counterexamples_view_orders_by_a_runs_column(tmp_path):
    """Ordered by a metric, MLflow's search scans a materialized latest_metrics subquery once per matching
    run in SQLite (quadratic over a long hunt); the saved view orders by run name, a column of runs."""
    from study.tracking.links import COUNTEREXAMPLES_VIEW, counterexamples_link

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("ordered", artifact_location=(tmp_path / "a").as_uri())
    assert counterexamples_link(uri, "ordered") is not None
    envelope = json.loads(client.get_experiment(experiment).tags[f"{VIEW_TAG_PREFIX}{COUNTEREXAMPLES_VIEW}"])
    state = json.loads(envelope["state"])
    assert state["orderByKey"] == "attributes.run_name" and state["orderByAsc"] is True
    assert state["searchFilter"] == COUNTEREXAMPLE_FILTER
