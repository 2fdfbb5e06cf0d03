"""Storage and tracking URLs: plain ``postgresql://`` works for both; a server that is not there (closed
port, or one that accepts and never answers) is one line on stderr, exit 2, within seconds, nothing
written."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from study.search.driver import HuntOptions, run_hunt
from study.spec import parse_pipeline
from study.tracking.reach import UnreachableStoreError, check_reachable
from tests.cluster.conftest import free_port, tiny_pipeline

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_plain_postgresql_urls_hold_the_study_and_the_runs(tmp_path, pg_url, ray_local):
    plain = pg_url.replace("postgresql+psycopg2://", "postgresql://", 1)  # the URL a user writes
    spec = parse_pipeline(tiny_pipeline("plain_pg", trials=1))
    storage, tracking = f"{plain}/optuna_test", f"{plain}/mlflow_test"
    out = tmp_path / "hunt"
    try:
        run_hunt(spec, HuntOptions(out=out, storage=storage, tracking_uri=tracking, progress=False))
        study = optuna.load_study(study_name=spec.name, storage=storage)
        assert [t.state.name for t in study.get_trials()] == ["COMPLETE"]
        client = MlflowClient(tracking_uri=tracking)
        experiment = client.get_experiment_by_name(spec.name)
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id], "tags.`minima_hunt.kind` = 'run'")
        assert len(runs) == len(pd.read_csv(out / "runs.csv")) == spec.runs_per_trial
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=spec.name, storage=storage)


@contextlib.contextmanager
def silent_server():
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_check_reachable_answers_in_seconds():
    with silent_server() as port:
        for url, what in (
            (f"http://127.0.0.1:{port}", "no answer from http://127.0.0.1"),
            (f"postgresql://u:secret@127.0.0.1:{port}/db", "cannot connect to postgresql://u:***@127.0.0.1"),
        ):
            start = time.monotonic()
            with pytest.raises(UnreachableStoreError) as info:
                check_reachable(url, "x", timeout=2)
            assert time.monotonic() - start < 10
            assert what in str(info.value) and "secret" not in str(info.value)
    for url in (None, "sqlite:///x.db", "journal:///tmp/j.log", "file:///tmp/mlruns"):
        check_reachable(url, "x")  # files: nothing to ask


@pytest.mark.parametrize("flag", ["--tracking-uri", "--storage"])
def test_hunt_with_an_absent_server_fails_in_one_line_and_writes_nothing(tmp_path, flag):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_pipeline("absent")))
    out = tmp_path / "hunt"
    closed = free_port()
    url = (
        f"http://127.0.0.1:{closed}"
        if flag == "--tracking-uri"
        else f"postgresql://u:p@127.0.0.1:{closed}/db"
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "study.cli", "hunt", str(path), "--out", str(out), flag, url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    seconds = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("study: error: ") and str(closed) in lines[0], proc.stderr
    assert not out.exists()
    assert seconds < 60  # interpreter start and imports included, on a shared 2-core machine
