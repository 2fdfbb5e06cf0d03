"""A hunt with several trials in flight on several Ray workers, its study in PostgreSQL: every trial
asked is told exactly once, none is lost or run twice."""

from __future__ import annotations

import contextlib
import json

import optuna
import pandas as pd
import pytest

from study.search.driver import HuntOptions, run_hunt, trial_seeds
from study.spec import parse_pipeline
from tests.cluster.conftest import tiny_pipeline

TRIALS = 6


@pytest.mark.postgres
def test_concurrent_trials_on_postgres_are_each_told_once(tmp_path, pg_url, ray_local):
    spec = parse_pipeline(tiny_pipeline("pg_hunt", trials=TRIALS, max_inflight=3))
    storage = f"{pg_url}/optuna_test"
    out = tmp_path / "hunt"
    try:
        table = run_hunt(spec, HuntOptions(out=out, storage=storage, progress=False))

        study = optuna.load_study(study_name=spec.name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * TRIALS
        assert sorted(t.number for t in trials) == list(range(TRIALS))
        seed_bases = [t.user_attrs["seed_base"] for t in trials]
        assert len(set(seed_bases)) == TRIALS
        # several trials were in flight at once: more than one had started before the first finished
        first_done = min(t.datetime_complete for t in trials)
        assert sum(t.datetime_start < first_done for t in trials) >= 2
        assert json.loads((out / "hunt_stats.json").read_text())["cluster_cpus"] >= 2

        runs = pd.read_csv(out / "runs.csv")
        assert len(runs) == TRIALS * spec.runs_per_trial and runs["seed"].is_unique
        expected = {s for b in seed_bases for s in trial_seeds(spec, b, spec.runs_per_trial)}
        assert set(runs["seed"]) == expected
        assert sorted(table["trial"]) == list(range(TRIALS))
    finally:
        with contextlib.suppress(KeyError):  # KeyError: the hunt failed before creating it
            optuna.delete_study(study_name=spec.name, storage=storage)
