"""Budgets, real search, pruning and repeats on real local Ray, Optuna (SQLite) and MLflow stores."""

import json
import time

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from study.dispatch.pool import ChunkPool
from study.reports.report import build_report
from study.search.driver import HuntOptions, run_hunt
from study.search.samplers import make_storage
from study.spec import parse_pipeline
from study.tracking.mlflow_sink import TAG_KIND, default_tracking_uri
from tests.cluster.conftest import tiny_pipeline


def load(out, name):
    return optuna.load_study(study_name=name, storage=make_storage(None, out))


def mlflow_runs(out, name, kind):
    client = MlflowClient(tracking_uri=default_tracking_uri(out))
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = '{kind}'", max_results=5000)


def test_time_budget_stops_starting_trials_and_logs_everything_it_trained(tmp_path, ray_local):
    raw = tiny_pipeline("budget", trials=1000, max_inflight=2)
    spec = parse_pipeline(raw)
    out = tmp_path / "hunt"
    start = time.time()
    deadline = start + 40.0  # generous: opening the stores alone takes seconds on a loaded machine
    table = run_hunt(spec, HuntOptions(out=out, progress=False, deadline=deadline))
    wall = time.time() - start
    study = load(out, spec.name)
    trials = study.get_trials(deepcopy=False)
    assert 1 <= len(trials) < 1000  # the time, not the trial count, stopped it
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)  # none running or waiting
    assert all(t.datetime_start.timestamp() <= deadline for t in trials)  # none started after
    slowest = max((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    assert wall <= 40.0 + 2 * slowest + 10.0  # in-flight trials finished, then it stopped
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 * len(trials) == len(mlflow_runs(out, spec.name, "run"))
    record = json.loads((out / "hunt.json").read_text())
    assert record["stopped"] == "time budget spent" and record["trials"] is None
    summary = (out / "summary.md").read_text()
    assert f"{len(trials)} trials ({len(trials)} complete); {len(runs)} runs trained" in summary
    assert len(table) == len(trials)


def test_grid_without_budget_stops_when_exhausted_and_leaves_nothing_waiting(tmp_path, ray_local):
    spec = parse_pipeline(tiny_pipeline("grid", sampler="grid", trials=50))
    out = tmp_path / "hunt"
    run_hunt(spec, HuntOptions(out=out, progress=False, trials=1))  # stops early: one grid point
    study = load(out, spec.name)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE]
    run_hunt(spec, HuntOptions(out=out, progress=False))  # no budget: the whole grid (k = 3, 4)
    study = load(out, spec.name)
    assert sorted(t.params["k"] for t in study.get_trials()) == [3, 4]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials())
    assert json.loads((out / "hunt.json").read_text())["stopped"] == "grid exhausted"
    assert study.metric_names == ["spurious_rate"]  # named in the dashboard


def test_tpe_models_after_its_start_up_trials(tmp_path, ray_local):
    """Objective n - k over excess in 0..20: the 4 start-up trials are TPE's random draws (the same as a
    RandomSampler with the seed); afterwards TPE's proposals concentrate on large excess."""
    raw = tiny_pipeline(
        "tpe",
        search={"excess": {"type": "int", "low": 0, "high": 20}},
        fixed={"k": 2},
        derived={"n": "k + excess"},
        objective="overparameterization",
        sampler={"name": "tpe", "n_startup_trials": 4, "seed": 1},
        runs_per_trial=1,
        chunk_size=1,
        trials=14,
        max_inflight=1,
        train={"tol": 1.0e-5, "max_steps": 200},
        repeats="skip",
    )
    spec = parse_pipeline(raw)
    run_hunt(spec, HuntOptions(out=tmp_path / "hunt", progress=False))
    proposals = [t.params["excess"] for t in load(tmp_path / "hunt", spec.name).get_trials()]
    assert len(proposals) == 14
    random = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    draws = [random.ask().suggest_int("excess", 0, 20) for _ in range(14)]
    assert proposals[:4] == draws[:4]
    # afterwards TPE models the told results: had it not seen them (trials asked before the previous
    # ones were told), it would still be drawing the random sequence (mean 7.7, one draw >= 15)
    modelled = proposals[4:]
    assert modelled != draws[4:], proposals
    assert sum(x >= 15 for x in modelled) >= len(modelled) // 2, proposals  # uniform: 29% of draws
    assert sum(modelled) / len(modelled) >= 12, proposals  # uniform draws average 10
    assert max(modelled) == 20


def test_pruner_stops_a_hopeless_trial_and_logs_what_it_ran(tmp_path, ray_local):
    """Maximize the non-global rate: a tiny step never converges (rate 1), the usual step reaches the
    global minimum (k = n = 3); after its first chunk (0 of 2 runs) the second trial cannot beat 1 at
    99% confidence and is pruned: its cancelled chunks are not trained, its finished runs are logged."""
    raw = tiny_pipeline(
        "prune",
        search={"lr": {"type": "categorical", "choices": [1.0e-6, 0.1]}},
        derived={},
        fixed={"k": 3, "n": 3},
        objective="non_global_rate",
        sampler="grid",
        pruner={"name": "rate_bound", "confidence": 0.99},
        runs_per_trial=8,
        chunk_size=2,
        max_inflight=1,
        train={"tol": 1.0e-7, "max_steps": 3000, "newton_polish": True},
    )
    spec = parse_pipeline(raw)
    out = tmp_path / "hunt"
    table = run_hunt(spec, HuntOptions(out=out, progress=False, num_cpus=2))
    states = dict(zip(table["lr"], table["state"], strict=True))
    assert states == {1.0e-6: "COMPLETE", 0.1: "PRUNED"}
    pruned = load(out, spec.name).get_trials()[1]
    assert pruned.intermediate_values and min(pruned.intermediate_values.values()) == 0.0
    runs = pd.read_csv(out / "runs.csv")
    ran = runs[runs["trial"] == 1]
    assert 2 <= len(ran) < 8 and (ran["critical_point"] == "global_minimum").all()
    assert len(mlflow_runs(out, spec.name, "run")) == len(runs)
    (trial_run,) = [r for r in mlflow_runs(out, spec.name, "trial") if r.data.tags["optuna.trial"] == "1"]
    assert trial_run.info.status == "KILLED" and trial_run.data.tags["optuna.state"] == "PRUNED"
    assert trial_run.data.metrics["runs"] == len(ran)


def test_median_pruner_compares_equal_steps_when_chunks_are_sized_by_time(tmp_path, ray_local, monkeypatch):
    """Chunks sized by time: the first trial's come at chunk_size (nothing measured yet), every later
    chunk holds one run (each measured run is slower than the target). Both trials still report at the
    multiples of chunk_size, so the median pruner compares them: maximizing the non-global rate, the
    trial that reaches the global minimum (k = n = 3) is below the first one's median and is pruned."""
    pools: list[ChunkPool] = []
    start = ChunkPool.start

    def time_sized(**options):
        pool = start(**options)
        pool.chunk_seconds = 1.0e-9  # any measured run outlasts a chunk: one run per chunk
        pools.append(pool)
        return pool

    monkeypatch.setattr(ChunkPool, "start", staticmethod(time_sized))
    raw = tiny_pipeline(
        "median",
        search={"lr": {"type": "categorical", "choices": [1.0e-6, 0.1]}},
        derived={},
        fixed={"k": 3, "n": 3},
        objective="non_global_rate",
        sampler="grid",
        pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        runs_per_trial=16,
        chunk_size=4,
        max_inflight=1,
        train={"tol": 1.0e-7, "max_steps": 3000, "newton_polish": True},
    )
    spec = parse_pipeline(raw)
    out = tmp_path / "hunt"
    table = run_hunt(spec, HuntOptions(out=out, progress=False, num_cpus=2))
    (pool,) = pools
    assert pool.chunk_runs(spec.runs_per_trial) == 1  # the second trial's chunks were sized by time
    states = dict(zip(table["lr"], table["state"], strict=True))
    assert states == {1.0e-6: "COMPLETE", 0.1: "PRUNED"}
    first, pruned = load(out, spec.name).get_trials()
    assert first.intermediate_values == {4: 1.0, 8: 1.0, 12: 1.0, 16: 1.0}  # every step, whatever chunks
    # pruned at a multiple of 4 below 16 (the first at which the first trial had been told)
    steps = sorted(pruned.intermediate_values)
    assert steps and steps == list(range(4, steps[-1] + 1, 4)) and steps[-1] < 16, steps
    assert set(pruned.intermediate_values.values()) == {0.0}, pruned.intermediate_values
    ran = pd.read_csv(out / "runs.csv").query("trial == 1")
    assert steps[-1] <= len(ran) < 16 and (ran["critical_point"] == "global_minimum").all()


@pytest.mark.parametrize("repeats", ["accumulate", "skip"])
def test_a_repeated_configuration_accumulates_seeds_or_is_skipped(tmp_path, ray_local, repeats):
    raw = tiny_pipeline(
        f"repeat_{repeats}",
        search={"k": {"type": "int", "low": 3, "high": 3}},
        trials=3,
        max_inflight=1,
        repeats=repeats,
    )
    spec = parse_pipeline(raw)
    out = tmp_path / "hunt"
    run_hunt(spec, HuntOptions(out=out, progress=False))
    trials = load(out, spec.name).get_trials()
    runs = pd.read_csv(out / "runs.csv")
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    if repeats == "accumulate":  # fresh seeds each time, told the pooled estimate
        assert len(runs) == 12 and runs["seed"].is_unique
        assert [t.user_attrs.get("pooled_runs") for t in trials] == [None, 8, 12]
    else:  # trained once; the repeats are told the same value without training
        assert len(runs) == 4
        assert [t.user_attrs.get("repeat_of") for t in trials] == [None, 0, 0]
        assert trials[1].values == trials[2].values == trials[0].values


def test_multi_objective_report_draws_the_pareto_front(tmp_path, ray_local):
    raw = tiny_pipeline(
        "pareto",
        search={"k": {"type": "int", "low": 2, "high": 3}, "excess": {"type": "int", "low": 0, "high": 1}},
        derived={"n": "k + excess"},
        objective=["non_global_rate", "overparameterization"],
        sampler="grid",
        trials=4,
        runs_per_trial=2,
        train={"tol": 1.0e-6, "max_steps": 500},
    )
    spec = parse_pipeline(raw)
    out = tmp_path / "hunt"
    run_hunt(spec, HuntOptions(out=out, progress=False))
    report = build_report(out)
    assert (report.folder / "pareto_front.png").is_file()
    assert "The Pareto front" in report.markdown
