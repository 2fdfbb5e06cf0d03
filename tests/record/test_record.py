"""The run record: typed records, atomic per-trial files, and files written by the previous format."""

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.record import (
    CORE_COLUMNS,
    SCHEMA_VERSION,
    RunBatch,
    is_counterexample,
    load_runs,
    read_runs_table,
    records,
    refresh_runs_table,
    save_trial,
    saved_seed_bases,
    to_frame,
    trial_frame,
    write_tables,
)
from study.reports.hunt import load_hunt

V1 = Path(__file__).parents[1] / "fixtures" / "hunt_v1"  # written by the code before schema 2


def _batch(seeds: list[int], *, loss: float = 0.5) -> RunBatch:
    row = {c: 0 for c in CORE_COLUMNS}
    row.update(
        l_star_source="landscape",
        spectrum_method="dense",
        critical_point="spurious_minimum",
        certificate="radius bound",
        device="cpu:x",
        certified=True,
        escaped=False,
        converged=True,
        loss=loss,
        radius=math.nan,
    )
    frame = pd.DataFrame(
        [{**row, "seed": s, "best_angle": 0.25, "hyp_orthonormal_teacher": True} for s in seeds]
    )
    R = len(seeds)
    return RunBatch(
        frame=frame,
        theta=np.arange(R * 3, dtype=float).reshape(R, 3),
        theta0=np.zeros((R, 3)),
        eigenvalues=np.ones((R, 3)),
        curve_steps=np.arange(2),
        curve=np.ones((R, 2)),
        train_span=np.tile([1.7e9, 1.7e9 + 2.5], (R, 1)),
    )


def test_previous_format_loads_with_its_landscape_and_arrays():
    hunt = load_hunt(V1)
    assert hunt.landscape == "teacher_student"  # schema 1 never named it
    assert len(hunt.runs) == 6 and set(hunt.runs["schema"]) == {1}
    assert (hunt.runs["array_row"] >= 0).all()
    theta = hunt.stacked(hunt.runs, "theta")
    assert theta is not None and theta.shape[0] == 6 and theta.shape[1] > 0
    typed = records(hunt.runs)
    assert [r.seed for r in typed] == list(hunt.runs["seed"])
    assert all(r.critical_point == "global_minimum" and r.certified for r in typed)
    assert typed[0].params == {"k": 4, "n": 4} and typed[0].hypotheses["orthonormal_teacher"]
    assert "best_angle" in typed[0].diagnostics and "loss" not in typed[0].diagnostics


def test_records_round_trip_through_a_frame(tmp_path):
    batch = _batch([7, 8])
    frame = trial_frame(
        batch, trial=3, seed_base=5, values={"k": 2, "widths": (1, 2)}, landscape="teacher_student"
    )
    typed = records(frame)
    assert typed[0].trial == 3 and typed[0].seed_base == 5 and typed[0].schema == SCHEMA_VERSION
    assert typed[0].params == {"k": 2, "widths": "(1, 2)"} and typed[0].certified_spurious
    again = to_frame(typed)
    pd.testing.assert_frame_equal(
        again[sorted(again.columns)], frame[sorted(frame.columns)], check_dtype=False
    )


def test_a_half_written_trial_csv_is_skipped_and_tables_stay_current(tmp_path):
    for seed_base in (0, 1):
        batch = _batch([seed_base * 10, seed_base * 10 + 1])
        frame = trial_frame(
            batch, trial=seed_base, seed_base=seed_base, values={"k": 2}, landscape="teacher_student"
        )
        save_trial(tmp_path, frame, batch, seed_base=seed_base)
    # an interrupted hunt has trial files but no runs.csv yet: it can still be read
    assert len(read_runs_table(tmp_path)) == 4
    # a kill in the middle of an older, non-atomic write leaves a cut CSV: skipped, trial re-run on resume
    cut = tmp_path / "trials" / "trial-00001.csv"
    cut.write_text(cut.read_text()[:5])
    (tmp_path / "trials" / "trial-00002.csv").write_text("")
    assert saved_seed_bases(tmp_path) == {0}
    runs = write_tables(tmp_path, pd.DataFrame({"trial": [0]}))
    assert list(runs["seed"]) == [0, 1]
    assert list(pd.read_csv(tmp_path / "runs.csv")["seed"]) == [0, 1]
    assert not list(tmp_path.glob("**/*.tmp*"))  # no temporary files left behind


def test_one_counterexample_predicate():
    frame = pd.DataFrame(
        {
            "critical_point": ["spurious_minimum", "spurious_minimum", "saddle", "spurious_minimum"],
            "certified": [True, False, True, "True"],
        }
    )
    assert is_counterexample(frame).tolist() == [True, False, False, True]  # not re-verified: certified
    frame["verdict"] = ["rejected", "", "", "contradiction_candidate"]
    assert is_counterexample(frame).tolist() == [False, False, False, True]  # re-verified: its verdict
    frame.loc[0, "verdict"] = "confirmed"
    assert is_counterexample(frame).tolist() == [True, False, False, True]
    assert not is_counterexample(pd.DataFrame()).any()


def test_a_missing_core_column_is_named():
    frame = _batch([1]).frame.drop(columns=["lambda_min"])
    with pytest.raises(ValueError, match="lambda_min"):
        records(frame)


def test_load_runs_of_an_empty_folder(tmp_path):
    assert load_runs(tmp_path).empty
    with pytest.raises(FileNotFoundError, match="runs.csv"):
        read_runs_table(tmp_path)


def test_a_runs_table_whose_verdicts_differ_from_the_trial_files_is_stale(tmp_path):
    """Same runs and classes, but a verdict or its source (``verified_by``) not the trial files': the
    table is rebuilt from them; a table that matches them (blank read back as NaN) is left alone."""
    out = tmp_path / "hunt"
    shutil.copytree(V1, out)
    trials = sorted((out / "trials").glob("*.csv"))
    total = 0
    for trial in trials:  # every run confirmed; the first of each trial verified itself, the rest carried
        rows = pd.read_csv(trial)
        total += len(rows)
        carried = [""] + ["s1"] * (len(rows) - 1)
        rows.assign(verdict="confirmed", verified_by=carried).to_csv(trial, index=False)
    assert refresh_runs_table(out) is not None  # the table had no verdicts yet
    assert refresh_runs_table(out) is None and len(pd.read_csv(out / "runs.csv")) == total
    current = pd.read_csv(out / "runs.csv")
    assert current["verdict"].eq("confirmed").all() and current["verified_by"].isna().sum() == len(trials)
    for column, value in (("verdict", "rejected"), ("verified_by", "s7")):
        changed = current.copy()
        changed.loc[1, column] = value
        changed.to_csv(out / "runs.csv", index=False)
        assert refresh_runs_table(out) == (total, total)
        rebuilt = pd.read_csv(out / "runs.csv")[column]
        assert rebuilt.fillna("").tolist() == current[column].fillna("").tolist()
