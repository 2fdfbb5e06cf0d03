"""What a counterexample says about itself in MLflow: its name, description, certificate.json and
family spectrum plot beside its weights; bookkeeping kept out of the metrics; a stepped loss curve."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
from mlflow.tracking import MlflowClient

from study.runs import RunSpec, run_replicas
from study.tracking import naming
from study.tracking.mlflow_sink import HuntTracker, default_tracking_uri
from study.training.gd import TrainConfig

VALUES = {"k": 3, "n": 3}


def _batch_with_a_confirmed_counterexample():
    """Two real runs (k = n = 3); the first relabelled as a re-verified spurious minimum."""
    spec = RunSpec("teacher_student", dict(VALUES), train=TrainConfig(tol=1e-8))
    batch = run_replicas(spec, [5, 6])
    frame = batch.frame.copy()
    frame["trial"], frame["seed_base"], frame["param_k"] = 0, 0, 3
    frame.loc[0, ["critical_point", "certified"]] = ["spurious_minimum", True]
    frame.loc[1, "critical_point"] = "global_minimum"
    frame["verdict"] = ["confirmed", ""]
    frame["verdict_reason"] = ["polished to 1e-13; certificate holds; escape test: no descent", ""]
    frame["family"] = ["S_2 diagonal", ""]
    frame["verified_radius"] = [2.5e-9, math.nan]
    frame.loc[0, "loss"] = 0.0215
    return dataclasses.replace(batch, frame=frame), spec


def test_names_say_what_a_run_is():
    row = {"critical_point": "spurious_minimum", "certified": True, "verdict": "confirmed", "loss": 0.02151}
    assert naming.run_name({**row, "seed": 100023}, {"k": 8, "n": 8}) == "SPURIOUS k8-n8 L=0.0215 s100023"
    assert naming.headline({**row, "verdict": "contradiction_candidate"}) == "CONTRADICTION?"
    assert naming.headline({**row, "verdict": "rejected"}) == "spurious-rejected"
    assert naming.headline({"critical_point": "spurious_minimum", "certified": True}) == "SPURIOUS"
    assert (
        naming.headline({"critical_point": "spurious_minimum", "certified": False}) == "spurious-uncertified"
    )
    assert naming.headline({"critical_point": "saddle", "n_negative": 2}) == "saddle-i2"
    assert naming.trial_name(3, {"k": 8, "excess": 0, "n": 8}) == "trial 3: k=8 excess=0 n=8"


def test_counterexample_run_stands_out_in_mlflow(tmp_path):
    batch, spec = _batch_with_a_confirmed_counterexample()
    tracker = HuntTracker(default_tracking_uri(tmp_path), "names", "names", artifact_root=tmp_path / "art")
    tracker.start_hunt({})
    trial_run = tracker.trial_run(0, 0, VALUES)
    assert (
        tracker.log_runs(
            trial_run, batch, seed_base=0, trial_number=0, values=VALUES, config=spec.flat_config()
        )
        == 2
    )
    client = MlflowClient(default_tracking_uri(tmp_path))
    assert client.get_run(trial_run).info.run_name == "trial 0: k=3 n=3"
    (found,) = client.search_runs([tracker.experiment_id], "tags.verdict = 'confirmed'")
    assert found.info.run_name == "SPURIOUS k3-n3 L=0.0215 s5"
    note = found.data.tags["mlflow.note.content"]
    for fact in ("re-verification: **confirmed**", "k = 3, n = 3", "0.0215", "S_2 diagonal", "2.5e-09"):
        assert fact in note, note
    assert "lambda_min" in note and "orthonormal_teacher: yes" in note
    assert found.data.tags["counterexample"] == "true"
    # bookkeeping are parameters, measurements metrics
    assert {"trial", "seed_base", "param_k", "seconds_per_run", "train_seconds_per_run"}.isdisjoint(
        found.data.metrics
    )
    assert "lambda_min" in found.data.metrics and "seconds_per_run" in found.data.params
    # certificate, weights and spectrum side by side
    listed = {a.path for a in client.list_artifacts(found.info.run_id, "counterexample")}
    assert {
        "counterexample/certificate.json",
        "counterexample/weights.npy",
        "counterexample/family_spectra.png",
        "counterexample/init.npy",
        "counterexample/hessian_eigenvalues.npy",
    } <= listed
    local = client.download_artifacts(found.info.run_id, "counterexample", str(tmp_path / "dl"))
    certificate = json.loads((tmp_path / "dl" / "counterexample" / "certificate.json").read_text())
    assert local
    assert certificate["verdict"] == "confirmed" and certificate["parameters"] == VALUES
    assert certificate["verified_radius"] == 2.5e-9 and certificate["seed"] == 5
    assert certificate["lambda_min"] == float(batch.frame.loc[0, "lambda_min"])
    assert certificate["hypotheses"]["orthonormal_teacher"] is True
    weights = np.load(tmp_path / "dl" / "counterexample" / "weights.npy")
    np.testing.assert_array_equal(weights, batch.theta[0])
    # the other run is named for what it is and has no certificate
    (other,) = client.search_runs([tracker.experiment_id], "tags.counterexample = 'false'")
    assert other.info.run_name.startswith("global k3-n3 L=")
    assert not client.list_artifacts(other.info.run_id)


def test_a_carried_verdict_names_its_source_and_keeps_the_runs_own_radius(tmp_path):
    """Run s6 carries the verdict of s5 (its family's verified member): MLflow shows ``verified_by``
    (s5; "self" on s5) and its own certificate radius, not the NaN verified radius of a carried verdict."""
    batch, spec = _batch_with_a_confirmed_counterexample()
    frame = batch.frame.copy()
    frame.loc[1, ["critical_point", "certified", "loss"]] = ["spurious_minimum", True, 0.0215]
    frame["verdict"] = ["confirmed", "confirmed"]
    frame["verdict_reason"] = ["outside any theorem's hypotheses"] * 2
    frame["family"] = ["S_2 diagonal", "S_2 diagonal"]
    frame["verified_radius"] = [2.5e-9, math.nan]  # carried verdicts have no radius of their own
    frame["radius"] = [2.0e-9, 7.25e-9]
    frame["verified_by"] = ["", "s5"]
    batch = dataclasses.replace(batch, frame=frame)
    tracker = HuntTracker(default_tracking_uri(tmp_path), "carry", "carry", artifact_root=tmp_path / "art")
    tracker.start_hunt({})
    trial_run = tracker.trial_run(0, 0, VALUES)
    tracker.log_runs(trial_run, batch, seed_base=0, trial_number=0, values=VALUES, config=spec.flat_config())
    client = MlflowClient(default_tracking_uri(tmp_path))
    (carried,) = client.search_runs([tracker.experiment_id], "tags.verified_by = 's5'")
    (source,) = client.search_runs([tracker.experiment_id], "tags.verified_by = 'self'")
    assert carried.info.run_name.endswith("s6") and source.info.run_name.endswith("s5")
    note = carried.data.tags["mlflow.note.content"]
    assert "radius 7.25e-09" in note and "radius nan" not in note, note
    assert "verdict carried from s5" in note, note
    own = source.data.tags["mlflow.note.content"]
    assert "radius 2.5e-09" in own and "carried" not in own, own
