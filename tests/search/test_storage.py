"""A new SQLite study storage appears whole: processes that open it while a driver creates it (a second
driver, a dashboard, the multi-node test polling the hunt) neither fail nor break the driver. Before,
two openers raced to create the schema ("table studies already exists"), about one start in five."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna

from study.search.samplers import make_storage

ROOT = Path(__file__).resolve().parents[2]
# a driver: create the hunt's storage and its study, as study.search.driver does
DRIVER = """
import sys
from pathlib import Path
import optuna
from study.search.samplers import make_storage
optuna.logging.set_verbosity(optuna.logging.ERROR)
optuna.create_study(study_name="race", storage=make_storage(None, Path(sys.argv[1])), load_if_exists=True)
"""


def test_a_storage_opened_while_a_driver_creates_it_is_whole(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for attempt in range(5):
        out = tmp_path / str(attempt)
        out.mkdir()
        db = out / "optuna.db"
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(out)], cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        opened = 0
        while driver.poll() is None:  # as tests/cluster/test_multinode.py polls a starting hunt
            if db.exists():
                make_storage(f"sqlite:///{db}", out)  # raises if the schema is half made
                opened += 1
            time.sleep(0.005)
        _, err = driver.communicate()
        assert driver.returncode == 0, err
        assert sqlite3.connect(db).execute("select count(*) from alembic_version").fetchone() == (1,)
        assert [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}")] == ["race"]
        assert not list(out.glob(".optuna.db.*"))  # no temporary file left
