"""Counterexample artifacts, bounded, read back through MLflow's public API from real stores (SQLite with
the sql writer, and the api writer on a second SQLite store): every certified spurious minimum keeps its
weights, initialization, spectrum and certificate; one family plot per trial, drawn once, linked into each
counterexample run; the trial's families.json counts its families; params, metrics and tags of the runs
are the same with both writers."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from study.runs import RunSpec, run_replicas
from study.tracking.artifacts import FAMILY_PLOT, FOLDER
from study.tracking.mlflow_sink import HuntTracker
from study.training.gd import TrainConfig

VALUES = {"k": 3, "n": 3}
SPURIOUS = [0, 1, 2, 3]  # rows relabelled as certified spurious minima: 0 and 1 one family, 2 and 3 two more


def _batch():
    """Six real runs (k = n = 3); rows 0..3 relabelled as certified spurious minima, rows 0 and 1 given the
    same loss and spectrum (one family), rows 2 and 3 distinct ones; rows 4 and 5 global minima."""
    spec = RunSpec("teacher_student", dict(VALUES), train=TrainConfig(tol=1e-8))
    batch = run_replicas(spec, list(range(6)))
    frame = batch.frame.copy()
    frame["critical_point"] = ["spurious_minimum"] * 4 + ["global_minimum"] * 2
    frame["certified"] = [True] * 4 + [False] * 2
    frame.loc[SPURIOUS, "loss"] = [0.02, 0.02, 0.03, 0.04]
    eigenvalues = batch.eigenvalues.copy()
    eigenvalues[1] = eigenvalues[0]
    eigenvalues[2] = eigenvalues[0] + 0.5  # another family at another loss
    return dataclasses.replace(batch, frame=frame, eigenvalues=eigenvalues), spec


@pytest.fixture(scope="module", params=["sql", "api"])
def logged(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    batch, spec = _batch()
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    tracker = HuntTracker(uri, "artifacts", "h", artifact_root=tmp / "art", writer=request.param)
    tracker.start_hunt({})
    trial = tracker.trial_run(0, 0, VALUES)
    assert (
        tracker.log_runs(trial, batch, seed_base=0, trial_number=0, values=VALUES, config=spec.flat_config())
        == 6
    )
    client = MlflowClient(uri)
    runs = client.search_runs([tracker.experiment_id], "tags.`minima_hunt.kind` = 'run'")
    by_seed = {int(r.data.params["seed"]): r for r in runs}
    return client, by_seed, trial, batch, tmp


def test_every_counterexample_keeps_weights_init_spectrum_and_certificate(logged) -> None:
    client, by_seed, _, batch, tmp = logged
    for row in SPURIOUS:
        run = by_seed[int(batch.frame.loc[row, "seed"])]
        listed = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, FOLDER)}
        assert listed == {
            "weights.npy",
            "init.npy",
            "hessian_eigenvalues.npy",
            "certificate.json",
            FAMILY_PLOT,
        }
        local = Path(client.download_artifacts(run.info.run_id, FOLDER, str(tmp / f"dl{row}")))
        np.testing.assert_array_equal(np.load(local / "weights.npy"), batch.theta[row])
        np.testing.assert_array_equal(np.load(local / "init.npy"), batch.theta0[row])
        np.testing.assert_array_equal(np.load(local / "hessian_eigenvalues.npy"), batch.eigenvalues[row])
        certificate = json.loads((local / "certificate.json").read_text())
        assert certificate["seed"] == int(batch.frame.loc[row, "seed"]) and certificate["run_key"].endswith(
            f"/0/{certificate['seed']}"
        )
        assert certificate["loss"] == float(batch.frame.loc[row, "loss"])
        assert (local / FAMILY_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for row in (4, 5):  # global minima: no artifacts
        assert not client.list_artifacts(by_seed[int(batch.frame.loc[row, "seed"])].info.run_id)


def test_the_family_plot_is_drawn_once_per_trial(logged) -> None:
    client, by_seed, trial, batch, tmp = logged
    plots = []
    for row in SPURIOUS:
        uri = by_seed[int(batch.frame.loc[row, "seed"])].info.artifact_uri
        plots.append(Path(uri.removeprefix("file://")) / FOLDER / FAMILY_PLOT)
    assert len({p.stat().st_ino for p in plots}) == 1 and plots[0].stat().st_nlink >= len(SPURIOUS)
    local = Path(client.download_artifacts(trial, "families", str(tmp / "families")))
    families = json.loads((local / "families.json").read_text())
    assert [f["runs"] for f in families] == [2, 1, 1]  # in order of loss: {0, 1}, {2}, {3}
    assert [f["loss"] for f in families] == [0.02, 0.03, 0.04]
    assert sum(len(f["run_keys"]) for f in families) == len(SPURIOUS)
    assert (local / FAMILY_PLOT).read_bytes() == plots[0].read_bytes()


def test_both_writers_log_the_same_params_metrics_and_tags(tmp_path) -> None:
    batch, spec = _batch()
    seen = {}
    for writer in ("sql", "api"):
        uri = f"sqlite:///{tmp_path / writer}.db"
        tracker = HuntTracker(uri, "same", "h", artifact_root=tmp_path / writer, writer=writer)
        tracker.start_hunt({})
        trial = tracker.trial_run(0, 0, VALUES)
        tracker.log_runs(trial, batch, seed_base=0, trial_number=0, values=VALUES, config=spec.flat_config())
        runs = MlflowClient(uri).search_runs([tracker.experiment_id], "tags.`minima_hunt.kind` = 'run'")
        seen[writer] = {
            int(r.data.params["seed"]): (
                r.data.params,
                {k: "nan" if math.isnan(v) else v for k, v in r.data.metrics.items()},
                {k: v for k, v in r.data.tags.items() if k not in ("mlflow.user", "mlflow.parentRunId")},
            )
            for r in runs
        }
    assert len(seen["sql"]) == 6 and seen["sql"] == seen["api"]


def test_relabelled_runs_keep_the_trials_family_plot(tmp_path) -> None:
    """Two of the trial's counterexamples relabelled later (a verdict added): their files are rewritten,
    but their family plot stays the whole trial's (the same file), not one of the two runs alone."""
    batch, spec = _batch()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = HuntTracker(uri, "relabel", "h", artifact_root=tmp_path / "art")
    tracker.start_hunt({})
    trial = tracker.trial_run(0, 0, VALUES)
    tracker.log_runs(trial, batch, seed_base=0, trial_number=0, values=VALUES, config=spec.flat_config())
    client = MlflowClient(uri)
    by_seed = {
        int(r.data.params["seed"]): r
        for r in client.search_runs([tracker.experiment_id], "tags.`minima_hunt.kind` = 'run'")
    }
    rows = [1, 3]
    uris = [by_seed[int(batch.frame.loc[r, "seed"])].info.artifact_uri for r in rows]
    plots = [Path(u.removeprefix("file://")) / FOLDER / FAMILY_PLOT for u in uris]
    before = [(p.stat().st_ino, p.read_bytes()) for p in plots]
    frame = batch.frame.iloc[rows].reset_index(drop=True).assign(verdict="confirmed", verdict_reason="ok")
    relabelled = dataclasses.replace(
        batch, frame=frame, theta=batch.theta[rows], theta0=batch.theta0[rows],
        eigenvalues=batch.eigenvalues[rows], curve=batch.curve[rows], train_span=batch.train_span[rows],
    )  # fmt: skip
    assert tracker.update_runs(relabelled, seed_base=0, trial_number=0, values=VALUES) == 2
    assert [(p.stat().st_ino, p.read_bytes()) for p in plots] == before
    whole = Path(client.download_artifacts(trial, "families", str(tmp_path / "families"))) / FAMILY_PLOT
    assert whole.read_bytes() == before[0][1]
    for r in rows:  # the rest of their files rewritten: the certificate now has the verdict
        run_id = by_seed[int(batch.frame.loc[r, "seed"])].info.run_id
        local = Path(client.download_artifacts(run_id, FOLDER, str(tmp_path / f"dl{r}")))
        assert json.loads((local / "certificate.json").read_text())["verdict"] == "confirmed"
