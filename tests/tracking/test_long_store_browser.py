"""A long hunt's store in the browser: 10^5 training runs logged through the project's own tracker (100
trials of one real 1000-run trial of the Safran 2021 protocol at k = n = 20, about 95% certified spurious
minima, each trial under its own seed base), the counterexamples link that `study hunt` prints opened in
headless Chromium over `mlflow ui`: the runs table renders within 15 s of wall time.

Building the store takes minutes: it is kept at ``$MINIMA_HUNT_LONG_STORE`` (default
/tmp/minima-hunt-long-store) and reused while its ``complete`` marker is there.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import yaml

from study.runs import run_replicas
from study.spec import parse_pipeline
from study.tracking.links import counterexamples_link
from study.tracking.mlflow_sink import HuntTracker
from tests.tracking.test_mlflow_ui_browser import chromium, mlflow_ui, rendered_text  # noqa: F401

STORE = Path(os.environ.get("MINIMA_HUNT_LONG_STORE", "/tmp/minima-hunt-long-store"))
TRIALS, RUNS = 100, 1000
EXPERIMENT = "long_hunt"
PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "safran_2021.yaml"


def build_store(folder: Path) -> str:
    """The store's URI, built when missing: ``TRIALS`` trials of ``RUNS`` runs, every run logged."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    if (folder / "complete").is_file():
        return uri
    folder.mkdir(parents=True, exist_ok=True)
    spec = parse_pipeline(yaml.safe_load(PIPELINE.read_text()), source=str(PIPELINE))
    values = spec.resolve({"k": 20})
    run_spec = spec.run_spec(values)
    batch = run_replicas(run_spec, list(range(RUNS)))
    tracker = HuntTracker(uri, EXPERIMENT, "long", artifact_root=folder / "mlartifacts")
    tracker.start_hunt({"trials": TRIALS})
    started = time.perf_counter()
    for trial in range(TRIALS):
        run_id = tracker.trial_run(trial, trial, values)
        tracker.log_runs(
            run_id, batch, seed_base=trial, trial_number=trial, values=values, config=run_spec.flat_config()
        )
        tracker.finish_trial(run_id, metrics={"runs": RUNS})
    tracker.finish_hunt()
    wall = time.perf_counter() - started
    per_run = 1000 * tracker.seconds / tracker.runs_logged
    (folder / "complete").write_text(
        f"{tracker.runs_logged} runs logged in {wall:.0f} s ({per_run:.2f} ms per run in log_runs)\n"
    )
    return uri


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium: run `make browser`")
def test_the_counterexamples_of_a_long_hunt_render_within_15_s(tmp_path, mlflow_ui) -> None:  # noqa: F811
    uri = build_store(STORE)
    link = counterexamples_link(uri, EXPERIMENT)
    assert link is not None
    base = mlflow_ui(uri)
    url = re.sub(r"^http://127\.0\.0\.1:5000", base, link)
    started = time.perf_counter()
    text = rendered_text(url, tmp_path / "profile", 15_000)
    wall = time.perf_counter() - started
    print(f"long store: {(STORE / 'complete').read_text().strip()}; table rendered in {wall:.1f} s wall")
    # the first page of the table: counterexamples by loss (the lowest family first), named as they are
    assert re.search(r"SPURIOUS teacheridentity-k20-n20-lr0\.25 L=0\.0113 s\d+", text), text[:3000]
    assert "global teacheridentity" not in text
    assert wall < 15, wall
