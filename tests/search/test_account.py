"""The account of a hunt's time (hunt_stats.json `account`) on a real tiny hunt: Ray, Optuna, MLflow."""

import json
import math

import pandas as pd
import pytest

from study.reports.account import STAGES, account_lines, add_invocation, invocation_account
from study.reports.report import build_report
from study.search.driver import HuntOptions, run_hunt
from study.spec import parse_pipeline
from tests.cluster.conftest import tiny_pipeline


def _trial_files(out):
    return pd.concat([pd.read_csv(p) for p in sorted((out / "trials").glob("*.csv"))], ignore_index=True)


def test_a_tiny_hunt_accounts_for_its_cores_and_a_resume_adds_to_it(tmp_path, ray_local):
    spec = parse_pipeline(tiny_pipeline("account"))
    out = tmp_path / "hunt"
    run_hunt(spec, HuntOptions(out=out, progress=False))
    first = json.loads((out / "hunt_stats.json").read_text())["account"]
    assert set(first["stages"]) == set(STAGES)
    assert all(first["stages"][s] >= 0 for s in STAGES), first
    assert 0 < first["busy_fraction"] <= 1
    assert first["cores"] == ray_local.cpus and first["invocations"] == 1
    files = _trial_files(out)
    assert math.isclose(first["stages"]["train"], files["train_seconds_per_run"].sum(), rel_tol=1e-9)
    diagnosis = (files["seconds_per_run"] - files["train_seconds_per_run"]).sum()
    assert math.isclose(first["stages"]["classify_certify"], diagnosis, rel_tol=1e-9)
    assert first["stages"]["train"] > 0 and first["stages"]["mlflow"] > 0 and first["stages"]["optuna"] > 0
    # the split of the workers' slots adds up to cores x wall
    workers = ("train", "classify_certify", "reverify", "worker_other", "idle")
    assert math.isclose(sum(first["stages"][s] for s in workers), first["core_seconds"], rel_tol=1e-9)
    assert math.isclose(first["core_seconds"], first["cores"] * first["wall_seconds"], rel_tol=1e-9)

    run_hunt(spec, HuntOptions(out=out, progress=False, trials=3))  # a resume: one trial more
    total = json.loads((out / "hunt_stats.json").read_text())["account"]
    assert total["invocations"] == 2 and total["wall_seconds"] > first["wall_seconds"]
    assert math.isclose(
        total["stages"]["train"], _trial_files(out)["train_seconds_per_run"].sum(), rel_tol=1e-9
    )
    assert all(total["stages"][s] >= first["stages"][s] for s in STAGES if s != "idle")
    assert 0 < total["busy_fraction"] <= 1

    report = build_report(out).markdown
    assert "## Where the time went" in report and "| train |" in report and "busy:" in report


def test_an_interrupted_and_resumed_hunt_has_one_wall_in_its_account_and_its_invocations(tmp_path, ray_local):
    spec = parse_pipeline(tiny_pipeline("interrupted", trials=3, max_inflight=1))
    out = tmp_path / "hunt"

    def ctrl_c(row):
        raise KeyboardInterrupt  # as Ctrl-C would, once the first trial is told

    with pytest.raises(KeyboardInterrupt):
        run_hunt(spec, HuntOptions(out=out, progress=False), on_trial=ctrl_c)
    assert json.loads((out / "hunt.json").read_text())["status"] == "KILLED"
    stopped = json.loads((out / "hunt_stats.json").read_text())
    assert stopped["account"]["invocations"] == len(stopped["invocations"]) == 1
    assert stopped["invocations"][0]["wall_seconds"] is not None  # closed by its own driver

    run_hunt(spec, HuntOptions(out=out, progress=False))  # resumed to the end
    stats = json.loads((out / "hunt_stats.json").read_text())
    entries, account = stats["invocations"], stats["account"]
    assert account["invocations"] == len(entries) == 2 and not any(e.get("killed") for e in entries)
    walls = [e["wall_seconds"] for e in entries]
    assert stats["total_wall_seconds"] == pytest.approx(sum(walls), rel=1e-12)
    assert account["wall_seconds"] == pytest.approx(stats["total_wall_seconds"], rel=1e-12)
    assert walls[0] == pytest.approx(stopped["invocations"][0]["wall_seconds"], rel=1e-12)
    for entry in entries:  # each wall spans its driver from its start (Ray's start up included)
        assert entry["finished"] - entry["started"] == pytest.approx(entry["wall_seconds"], abs=1.0)


def test_the_account_sums_invocations_and_recomputes_the_busy_fraction():
    stages = {"train": 3.0, "classify_certify": 1.0, "reverify": 2.0, "worker_tasks": 7.0, "mlflow": 0.5}
    one = invocation_account(stages, wall=5.0, cores=2)
    assert one["stages"]["worker_other"] == 1.0 and one["stages"]["idle"] == 3.0
    first = add_invocation(None, one)
    assert first["busy_fraction"] == pytest.approx(7.0 / 10.0)
    two = add_invocation(first, invocation_account({"worker_tasks": 1.0}, wall=5.0, cores=2))
    assert two["invocations"] == 2 and two["core_seconds"] == 20.0 and two["stages"]["idle"] == 12.0
    assert two["busy_fraction"] == pytest.approx(8.0 / 20.0)
    lines = account_lines(two)
    assert lines[-1].startswith("busy: 40.0% of 2 cores") and any(
        "| train | 3.0 | 15.0% |" in x for x in lines
    )
