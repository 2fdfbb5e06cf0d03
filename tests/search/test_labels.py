"""Labels where L* is unknown are made once, by the driver, against the best of every run of the
configuration; every run that becomes a spurious candidate is re-verified (tests of study.search.labels).

Teacher-student with n < k has no closed-form L* (optimal_loss is NaN). At k = 6, n = 4 with
gap_tol = 1e-4 runs end at the lowest value found (0.151158) or at a spurious minimum (0.15173).
"""

import dataclasses
import math

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from study.diagnostics.critical import DiagnosticsConfig, relabel_unknown_optimum
from study.diagnostics.verify import due_for_verification
from study.record import save_trial, trial_frame
from study.runs import RunSpec, run_replicas, verify_runs
from study.search.driver import HuntOptions, run_hunt
from study.search.labels import SOURCE, ConfigurationLabels, _changed
from study.search.objectives import objective_value
from study.spec import parse_pipeline
from study.tracking.mlflow_sink import TAG_RUN_KEY, default_tracking_uri
from study.training.gd import TrainConfig

GAP_TOL = 1e-4
VALUES = {"k": 6, "n": 4}
PIPELINE = {
    "landscape": "teacher_student",
    "search": {"k": {"type": "categorical", "choices": [6]}},  # one configuration, asked twice
    "fixed": {"n": 4},
    "train": {"max_steps": 20000, "newton_polish": True},
    "diagnostics": {"gap_tol": GAP_TOL},
    "runs_per_trial": 16,
    "chunk_size": 4,
    "trials": 2,
    "sampler": "random",
    "max_inflight": 1,  # trial 1 is asked after trial 0 is told, so its value pools both trials' runs
    # with this hunt seed (and the seed scheme of study.search.hunt_study.trial_seeds) one chunk of four
    # ends entirely at the spurious level: labelled by its chunk's best, all four would be global
    "seed": 5,
}


def candidates(frame: pd.DataFrame) -> pd.Series:
    return (frame["critical_point"] == "spurious_minimum") & frame["certified"].astype(bool)


def test_a_verdict_stands_unless_l_star_moves_across_its_losses():
    frame = pd.DataFrame(
        {
            "critical_point": ["spurious_minimum"] * 4 + ["global_minimum"],
            "certified": [True, True, True, False, True],
            "l_star": [1.0] * 5,
            "verdict": ["confirmed", "rejected", "", "", ""],
            "verified_loss": [1.5, 1.00011, math.nan, math.nan, math.nan],
            "rerun_loss": [math.nan] * 5,
        }
    )
    # judged against 1.00002: the second run's polished loss was then within gap_tol (rejected as global)
    due = due_for_verification(frame, np.full(5, 1.00002), gap_tol=GAP_TOL)
    assert due.tolist() == [False, True, True, False, False]
    # judged against the same L*: only the run without a verdict is due
    assert due_for_verification(frame, np.full(5, 1.0), gap_tol=GAP_TOL).tolist() == [
        False,
        False,
        True,
        False,
        False,
    ]


@pytest.mark.slow
def test_a_later_trial_that_lowers_the_best_relabels_and_reverifies_the_earlier_one(tmp_path):
    """Trial 0 ends only at the spurious level, so against its own best every run is global; trial 1
    finds the lower minimum: trial 0's runs become spurious candidates and each gets a verdict."""
    spec = RunSpec(
        "teacher_student",
        VALUES,
        train=TrainConfig(max_steps=20000, newton_polish=True),
        diagnostics=DiagnosticsConfig(gap_tol=GAP_TOL),
    )
    labels = ConfigurationLabels(tmp_path, gap_tol=GAP_TOL, verify=verify_runs)
    trials = {0: [16, 17, 18, 19], 1: [0, 1, 2, 3]}  # seeds: trial 0 all at 0.15173, trial 1 reaches 0.151158
    frames = {}
    for number, seeds in trials.items():
        batch = run_replicas(spec, seeds)
        frame = trial_frame(batch, trial=number, seed_base=number, values=VALUES, landscape="teacher_student")
        labelled, moved = labels.settle(
            VALUES, spec, frame, batch.theta, batch.theta0, seed_base=number, trial=number
        )
        save_trial(tmp_path, labelled, dataclasses.replace(batch, frame=labelled), seed_base=number)
        frames[number] = labelled
        if number == 0:
            assert moved == [] and set(labelled["critical_point"]) == {"global_minimum"}
            assert (labelled["verdict"] == "").all()
    (earlier,) = moved
    assert earlier.seed_base == 0 and earlier.changed == [0, 1, 2, 3]
    assert set(earlier.frame["critical_point"]) == {"spurious_minimum"}
    assert (earlier.frame["verdict"] != "").all() and set(earlier.frame["verdict"]) == {"confirmed"}
    assert (earlier.frame["l_star"] == frames[1]["l_star"].iloc[0]).all()
    assert (earlier.frame["l_star_source"] == SOURCE).all()
    # the same labels as labelling all eight runs at once
    both = pd.concat([earlier.frame, frames[1]], ignore_index=True)
    at_once = relabel_unknown_optimum(both, gap_tol=GAP_TOL, by=[])
    assert both["critical_point"].tolist() == at_once["critical_point"].tolist()
    assert candidates(both).sum() == (both["verdict"] != "").sum()


@pytest.mark.slow
def test_every_candidate_has_a_verdict_and_all_four_places_agree(tmp_path, ray_local):
    spec = parse_pipeline({"name": "labels_once", **PIPELINE})
    out = tmp_path / "hunt"
    table = run_hunt(spec, HuntOptions(out=out, progress=False))
    assert list(table["state"]) == ["COMPLETE", "COMPLETE"]
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False, na_values=[""])
    runs["verdict"] = runs["verdict"].fillna("")
    assert len(runs) == 32 and (runs["l_star_source"] == SOURCE).all()
    converged = ~runs["critical_point"].isin(["not_converged", "diverged"])
    assert (runs["l_star"] == runs.loc[converged, "loss"].min()).all()

    # the case chunk-local labels got wrong is here: a chunk whose four runs are all candidates
    runs["chunk"] = runs["trial"] * 4 + (runs.index % 16) // 4
    is_candidate = candidates(runs)
    whole_chunks = is_candidate.groupby(runs["chunk"]).all()
    assert whole_chunks.any(), "no chunk ends entirely at the spurious level: choose another hunt seed"

    # 1. verdicts: every candidate has one, nothing else has one
    assert (runs.loc[is_candidate, "verdict"] != "").all()
    assert (runs.loc[~is_candidate, "verdict"] == "").all()
    # 2. runs.csv is the trial files
    files = pd.concat(
        [pd.read_csv(p) for p in sorted((out / "trials").glob("trial-*.csv"))], ignore_index=True
    )
    assert files["critical_point"].tolist() == runs["critical_point"].tolist()
    # 3. MLflow: each run's class and verdict tags are its row's
    client = MlflowClient(tracking_uri=default_tracking_uri(out))
    experiment = client.get_experiment_by_name("labels_once")
    logged = {
        r.data.tags[TAG_RUN_KEY]: r.data.tags
        for r in client.search_runs([experiment.experiment_id], "tags.`minima_hunt.kind` = 'run'")
    }
    assert len(logged) == 32
    for row in runs.itertuples():
        tags = logged[f"labels_once/{row.seed_base}/{row.seed}"]
        assert tags["critical_point"] == row.critical_point
        assert tags.get("verdict", "") == row.verdict
        assert tags["counterexample"] == str(row.verdict in ("confirmed", "contradiction_candidate")).lower()
    # 4. the objective told for the configuration's latest trial (its runs pooled) is runs.csv's
    study = optuna.load_study(study_name="labels_once", storage=f"sqlite:///{out / 'optuna.db'}")
    latest = max(study.trials, key=lambda t: t.number)
    assert latest.values[0] == pytest.approx(objective_value(spec.objective[0], runs, VALUES), abs=1e-12)


def test_a_run_whose_verdict_source_moves_is_updated_in_mlflow():
    """``verified_by`` and ``family`` are MLflow tags too: a run whose verdict is now carried (or its
    family changed) counts as changed, with class and verdict the same; blank and NaN are one value."""
    before = pd.DataFrame(
        {
            "critical_point": ["spurious_minimum"] * 3,
            "verdict": ["confirmed"] * 3,
            "verdict_reason": ["outside any theorem's hypotheses"] * 3,
            "family": ["0.0187", "0.0187", "0.0187"],
            "verified_by": ["", "s3", math.nan],
        }
    )
    assert _changed(before, before.copy()) == []
    after = before.assign(verified_by=["s3", "s3", ""])  # run 0 now carries s3's verdict
    assert _changed(before, after) == [0]
    assert _changed(before, after.assign(family=["0.0187", "0.0353", "0.0187"])) == [0, 1]
