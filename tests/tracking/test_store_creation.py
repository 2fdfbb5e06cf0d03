"""A new SQLite tracking store (``OUT/mlflow.db``, or a ``sqlite:///`` URI that several hunts share)
appears whole: two processes that create it at once both open it. MLflow builds the schema in the file
itself (tables, then about fifty migrations) without a lock, so the second opener either creates tables
the first made already or finds the migrations half done."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 3
# a driver: open the tracking store and its experiment, as study.search.driver does, once GO exists
DRIVER = """
import sys, time
from pathlib import Path
from study.tracking.mlflow_sink import HuntTracker
uri, go, experiment = sys.argv[1:]
while not Path(go).exists():
    time.sleep(0.001)
HuntTracker(uri, experiment, experiment)
"""


def test_processes_creating_one_tracking_store_at_once_all_open_it(tmp_path):
    for attempt in range(4):
        out = tmp_path / str(attempt)
        out.mkdir()
        db = out / "mlflow.db"
        go = out / "go"
        drivers = [
            subprocess.Popen(
                [sys.executable, "-c", DRIVER, f"sqlite:///{db}", str(go), f"race{i}"],
                cwd=ROOT,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(PROCESSES)
        ]
        time.sleep(8)  # every driver has imported MLflow and waits for GO
        go.touch()
        errors = [(d.wait(timeout=120), d.communicate()[1]) for d in drivers]
        assert all(code == 0 for code, _ in errors), f"attempt {attempt}: " + "\n".join(
            err.strip().splitlines()[-1] for code, err in errors if code
        )
        names = {e.name for e in MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()}
        assert names == {"Default", *(f"race{i}" for i in range(PROCESSES))}
        assert sqlite3.connect(db).execute("select count(*) from alembic_version").fetchone() == (1,)
        assert not list(out.glob(".mlflow.db.*"))  # no temporary file left
