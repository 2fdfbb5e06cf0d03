"""Re-verification by family: on a real grid cell (k = n = 10, seeds with spurious minima in two
families), verdicts carried from a family's verified members equal the verdicts of verifying every run
itself; a member that does not match its family, and any run inside a theorem's hypotheses, is verified
itself, and so is every member of a family whose verified members disagree, and every run where
neither spectra nor invariants tell minima of one loss apart; old trial files without ``verified_by``
still load."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from study.diagnostics.verify import FamilyVerification, Verdict, carry_verdicts, with_verdicts
from study.landscapes.registry import make_landscape
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.record.files import load_runs
from study.runs import RunSpec, run_replicas, verify_batch
from study.search.identity import resolved_pipeline
from study.spec import PipelineError, parse_pipeline

FIXTURE = Path(__file__).parents[1] / "fixtures" / "hunt_v1"
SEEDS = [0, 1, 3, 9, 11, 14, 17, 18, 26, 50]  # spurious: 0.018702 x 7 (0 .. 18), 0.035327 x 2 (26, 50)


@pytest.fixture(scope="module")
def cell():
    torch.set_num_threads(1)
    spec = RunSpec("teacher_student", {"k": 10, "n": 10}, verify=FamilyVerification(per_family=0))
    batch = run_replicas(spec, SEEDS)
    spurious = batch.frame[batch.frame["critical_point"] == "spurious_minimum"]
    assert spurious["loss"].round(6).value_counts().to_dict() == {0.018702: 7, 0.035327: 2}
    alone = verify_batch(dataclasses.replace(spec, verify=FamilyVerification(per_family=100)), batch).frame
    assert (alone["verified_by"] == "").all() and (alone.loc[spurious.index, "verdict"] == "confirmed").all()
    return spec, batch, alone


COMPARED = ["verdict", "verdict_reason", "verified_loss", "family", "rerun_loss"]


@pytest.mark.parametrize("per_family", [0, 1, 2])
def test_verdicts_by_family_equal_verdicts_run_by_run(cell, per_family):
    spec, batch, alone = cell
    by_family = verify_batch(dataclasses.replace(spec, verify=FamilyVerification(per_family)), batch).frame
    pd.testing.assert_frame_equal(
        by_family[COMPARED].fillna(-1.0), alone[COMPARED].fillna(-1.0), check_exact=False, rtol=1e-9
    )
    carried = by_family[by_family["verified_by"] != ""]
    assert len(carried) == (7 - 1 - per_family) + max(0, 2 - 1 - per_family)
    for _, row in carried.iterrows():  # carried from a verified member of the same family
        source = by_family[by_family["seed"] == int(row["verified_by"][1:])].iloc[0]
        assert source["verified_by"] == "" and source["family"] == row["family"]
        assert row["seed"] != source["seed"] and abs(source["loss"] - row["loss"]) < 1e-9
    # every run keeps its own certificate
    assert by_family["certified"].tolist() == batch.frame["certified"].tolist()
    assert by_family["radius"].equals(batch.frame["radius"])


def test_a_member_off_its_family_or_inside_a_theorem_is_verified_itself(cell):
    spec, batch, _ = cell
    landscape = TeacherStudent(TeacherStudentConfig(k=10, n=10))
    frame = batch.frame.copy()
    big = frame.index[frame["loss"].round(6) == 0.018702].tolist()
    frame.loc[big[-1], "loss"] += 1e-6  # its loss no longer matches the family's within 1e-8
    frame["hyp_inside_theorem"] = False
    frame.loc[big[-2], "hyp_inside_theorem"] = True  # inside: re-run from its start, verified alone
    out = with_verdicts(
        landscape, frame, batch.theta, batch.theta0, train_config=spec.train,
        families=FamilyVerification(per_family=0), eigenvalues=batch.eigenvalues,
    )  # fmt: skip
    assert out.loc[big[-1], "verified_by"] == "" and out.loc[big[-1], "verdict"] == "confirmed"
    assert out.loc[big[-2], "verified_by"] == "" and out.loc[big[-2], "verdict"] == "contradiction_candidate"
    carried = out.loc[big[:-2], "verified_by"]  # one member verified (per_family 0), the rest carry it
    assert (carried == "").sum() == 1 and carried[carried != ""].nunique() == 1
    source = frame.loc[carried.index[carried == ""][0]]
    assert (carried[carried != ""] == f"s{int(source['seed'])}").all()
    assert source["loss"] == frame.loc[big[:-2], "loss"].min()  # the family's lowest-loss member
    # without spectra given, they are computed: the same plan
    again = with_verdicts(
        landscape, frame, batch.theta, batch.theta0, train_config=spec.train,
        families=FamilyVerification(per_family=0),
    )  # fmt: skip
    assert again["verified_by"].tolist() == out["verified_by"].tolist()


def test_per_family_is_a_validated_pipeline_field_that_reaches_the_runs():
    pipeline = {"name": "p", "landscape": "teacher_student", "fixed": {"k": 6, "n": 6}, "search": {}}
    assert parse_pipeline(pipeline).run_spec({"k": 6, "n": 6}).verify == FamilyVerification(per_family=2)
    spec = parse_pipeline({**pipeline, "verify": {"per_family": 5}})
    assert spec.run_spec(spec.resolve({})).verify.per_family == 5
    assert "verify" not in resolved_pipeline(spec)  # scheduling: it changes the cost, not the verdicts
    with pytest.raises(PipelineError, match="verify: per_family must be an integer >= 0, got -1"):
        parse_pipeline({**pipeline, "verify": {"per_family": -1}})
    with pytest.raises(PipelineError, match="verify.per_family: expected an integer"):
        parse_pipeline({**pipeline, "verify": {"per_family": "two"}})


def test_old_trial_files_load_with_a_blank_verified_by(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "hunt")
    assert "verified_by" not in load_runs(tmp_path / "hunt") and len(load_runs(tmp_path / "hunt"))
    for path in (tmp_path / "hunt" / "trials").glob("*.csv"):  # verdicts from before families
        pd.read_csv(path).assign(verdict="confirmed").to_csv(path, index=False)
    loaded = load_runs(tmp_path / "hunt")
    assert (loaded["verified_by"] == "").all() and (loaded["verdict"] == "confirmed").all()


def test_members_of_a_family_whose_verified_members_disagree_are_verified_alone():
    """Two verified members of one family, equal in every feature, one confirmed and one rejected: the
    others carry neither verdict; when the two agree, the others carry the lowest member's."""
    seeds = [40, 41, 42, 43]
    confirmed = Verdict("confirmed", "outside any theorem's hypotheses", 0.0187, 1e-14, 2e-9, "f", np.nan)
    rejected = dataclasses.replace(confirmed, verdict="rejected", reason="escape test: ends lower")

    def same(member: int, verified: int, polished_loss: float) -> bool:
        return True  # every feature agrees

    carried, alone = carry_verdicts([[0, 1, 2, 3]], {0: confirmed, 1: rejected}, same, seeds)
    assert carried == {} and alone == [2, 3]
    carried, alone = carry_verdicts([[0, 1, 2, 3]], {0: confirmed, 1: confirmed}, same, seeds)
    assert alone == [] and sorted(carried) == [2, 3]
    assert {v.verified_by for v in carried.values()} == {"s40"}
    assert all(v.verdict == "confirmed" and np.isnan(v.radius) for v in carried.values())


def test_with_no_spectrum_and_no_invariants_every_run_is_verified_alone():
    """Deep linear (no family invariants), four runs at its global minimum (one loss, different points),
    labelled certified spurious and given no spectrum (Lanczos extremes only: (R, 0)): the loss alone is
    no family, so each is verified (and rejected: no spurious minimum there) on its own. With a
    (degenerate) spectrum to compare, the same four are one family and three carry the first's verdict."""
    params = {"widths": (3, 4, 3), "m": 10}
    spec = RunSpec("deep_linear", params, verify=FamilyVerification(per_family=0))
    batch = run_replicas(spec, [0, 1, 2, 3])
    assert (batch.frame["critical_point"] == "global_minimum").all()
    landscape = make_landscape("deep_linear", params)
    frame = batch.frame.copy()
    frame["critical_point"], frame["certified"] = "spurious_minimum", True
    frame["hyp_inside_theorem"] = False  # else each is verified alone for that reason
    frame["loss"] = landscape.optimal_loss  # the global minimum's loss, at distinct points
    assert np.ptp(batch.theta, axis=0).max() > 1e-3

    def verdicts(spectra: np.ndarray) -> pd.DataFrame:
        return with_verdicts(
            landscape, frame, batch.theta, batch.theta0, train_config=spec.train,
            families=FamilyVerification(per_family=0), eigenvalues=spectra,
        )  # fmt: skip

    alone = verdicts(np.zeros((4, 0)))
    assert (alone["verified_by"] == "").all() and (alone["verdict"] == "rejected").all()
    grouped = verdicts(np.zeros((4, 1)))
    assert (grouped["verified_by"] != "").sum() == 3
