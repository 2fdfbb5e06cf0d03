"""The open hunts (one pipeline per landscape) run under a time budget of 0.05 h on this machine."""

import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from study.search.driver import HuntOptions, run_hunt
from study.search.samplers import make_storage
from study.spec import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
OPEN = sorted((ROOT / "pipelines").glob("open_*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", OPEN, ids=[p.stem for p in OPEN])
def test_open_hunt_runs_under_a_time_budget(tmp_path, ray_local, path):
    spec = load_pipeline(path)
    out = tmp_path / spec.name
    hours = 0.05
    start = time.time()
    run_hunt(spec, HuntOptions(out=out, progress=False, deadline=start + hours * 3600))
    study = optuna.load_study(study_name=spec.name, storage=make_storage(None, out))
    trials = study.get_trials(deepcopy=False)
    assert trials and all(t.state.is_finished() for t in trials)
    assert all(t.datetime_start.timestamp() <= start + hours * 3600 for t in trials)
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) > 0 and "hyp_inside_theorem" in runs.columns
    assert "## Re-verified counterexamples" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_quickstart_with_a_budget_stops_within_it_plus_one_trial(tmp_path):
    """`study hunt pipelines/quickstart.yaml --hours 0.03`: no trial starts after the budget, the hunt
    ends at most one trial's duration later, and every run it trained is in runs.csv and MLflow."""
    import json
    import os
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from study.tracking.mlflow_sink import TAG_KIND, default_tracking_uri

    out = tmp_path / "quickstart"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "study.cli", "hunt", "pipelines/quickstart.yaml", "--hours", "0.03"]
        + ["--out", str(out), "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "hunt.json").read_text())
    deadline = record["deadline"]
    assert abs(deadline - (start + 0.03 * 3600)) < 30  # the budget counts from the command's start
    study = optuna.load_study(study_name="quickstart", storage=make_storage(None, out))
    trials = study.get_trials(deepcopy=False)
    assert trials and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(t.datetime_start.timestamp() <= deadline for t in trials)
    longest = max((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    assert record["finished"] <= deadline + longest + 15  # + writing the last trial's tables
    runs = pd.read_csv(out / "runs.csv")
    client = MlflowClient(tracking_uri=default_tracking_uri(out))
    exp = client.get_experiment_by_name("quickstart")
    logged = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'run'", max_results=5000)
    assert len(runs) == 32 * len(trials) == len(logged)
    assert "# Hunt summary: quickstart" in done.stdout
