"""Pipelines are validated before anything runs; errors name the file and the field."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from study.spec import PipelineError, load_pipeline, parse_pipeline

ROOT = Path(__file__).resolve().parents[2]

GOOD = {
    "name": "t",
    "landscape": "teacher_student",
    "search": {"k": {"type": "int", "low": 3, "high": 4}, "excess": {"type": "int", "low": 0, "high": 1}},
    "derived": {"n": "k + excess"},
    "runs_per_trial": 4,
}


def with_(**changes):
    raw = {**GOOD, **changes}
    return {k: v for k, v in raw.items() if v is not None}


def test_every_shipped_pipeline_validates():
    files = sorted((ROOT / "pipelines").glob("*.yaml"))
    assert files
    for path in files:
        spec = load_pipeline(path)
        assert spec.name and spec.trials >= 1


def test_good_pipeline_resolves_derived_values():
    spec = parse_pipeline(GOOD)
    values = spec.resolve({"k": 4, "excess": 1})
    assert values == {"k": 4, "excess": 1, "n": 5}
    run = spec.run_spec(values)
    assert run.params == {"k": 4, "n": 5}


@pytest.mark.parametrize(
    "raw,message",
    [
        (with_(landscape="nope"), "landscape: unknown landscape 'nope'"),
        (with_(runs_per_trial=0), "runs_per_trial: must be >= 1"),
        (with_(runs_per_trial="many"), "runs_per_trial: expected an integer"),
        (with_(search={"k": {"type": "int", "low": "six", "high": 4}}), "search.k.low: expected an integer"),
        (with_(search={"k": {"type": "int", "low": 5, "high": 4}}), "search.k: low (5) must be <= high (4)"),
        (with_(search={"k": {"type": "bogus"}}), "search.k.type"),
        (with_(objective="fun"), "objective: unknown objective 'fun'"),
        (
            with_(objective="test_error"),
            "objective: 'test_error' does not apply to landscape 'teacher_student'",
        ),
        (with_(objective=["spurious_rate", "test_error"]), "objective: 'test_error' does not apply"),
        (with_(sampler="annealing"), "sampler: unknown sampler"),
        (with_(train={"lr": -1.0}), "train: lr must be a positive number"),
        (with_(train={"learning_rate": 0.1}), "train: unknown field(s) ['learning_rate']"),
        (with_(colour="blue"), "unknown top-level field(s) ['colour']"),
        (with_(derived={"n": "k + oops"}), "unknown name 'oops'"),
        (with_(derived={"n": "k - 10"}), "n must be >= 1"),
        (with_(fixed={"teacher": "wavy"}), "teacher must be"),
        (with_(name=None), "name: required"),
    ],
)
def test_invalid_pipelines_name_the_field(raw, message):
    with pytest.raises(PipelineError) as info:
        parse_pipeline(raw, source="p.yaml")
    assert str(info.value).startswith("p.yaml: ")
    assert message in str(info.value)


def hunt_cli(*args: object) -> subprocess.CompletedProcess[str]:
    """``study hunt ARGS`` in a fresh interpreter (what a user types)."""
    command = [sys.executable, "-m", "study.cli", "hunt", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_cli_rejects_invalid_pipeline_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_(runs_per_trial=-3)))
    out = tmp_path / "out"
    proc = hunt_cli(bad, "--out", out)
    assert proc.returncode == 2
    assert "runs_per_trial: must be >= 1" in proc.stderr and str(bad) in proc.stderr
    assert not out.exists()
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    proc = subprocess.run(
        [sys.executable, "-m", "study.cli", "hunt", str(broken)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr


def test_objective_the_landscape_does_not_support_is_refused_at_parse_time(tmp_path):
    classification = {"name": "c", "landscape": "classification", "fixed": {"hidden": 8}}
    assert parse_pipeline({**classification, "objective": "test_error"}).objective == ("test_error",)
    with pytest.raises(PipelineError, match="'overparameterization' does not apply to landscape"):
        parse_pipeline({**classification, "objective": "overparameterization"})
    assert parse_pipeline(with_(objective="overparameterization")).objective == ("overparameterization",)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_(objective="test_error")))
    out = tmp_path / "out"
    proc = hunt_cli(bad, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"study: error: {bad}: objective: 'test_error' does not apply to landscape 'teacher_student'; "
        "it supports "
        "['classified_spurious_rate', 'max_gap', 'non_global_rate', 'overparameterization', 'spurious_rate']"
    ]
    assert not out.exists()


def test_cli_unreachable_storage_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    url = "postgresql+psycopg2://nobody:nothing@127.0.0.1:1/none"  # nothing listens on port 1
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.cli",
            "hunt",
            str(ROOT / "pipelines/quickstart.yaml"),
            "--out",
            str(out),
            "--storage",
            url,
            "--trials",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "storage: cannot connect to postgresql+psycopg2://nobody:***@127.0.0.1:1" in lines[0]
    )
    assert "nothing" not in lines[0]  # the password stays out of the message
    assert not out.exists()


# ---- samplers, pruners, repeats and command-line overrides (issue 11) ---------------------------------
@pytest.mark.parametrize(
    "raw,message",
    [
        (with_(sampler={"name": "tpe", "n_start": 5}), "sampler.n_start: unknown option for TPESampler"),
        (with_(sampler={"name": 3}), "sampler.name: expected a sampler name"),
        (with_(sampler={"name": "tpe", "n_startup_trials": "five"}), "sampler.n_startup_trials: expected an"),
        (with_(sampler={"name": "nsga2", "population_size": 1}), "sampler: NSGAIISampler("),
        (with_(sampler={"name": "grid", "seed": 1}), "sampler: the grid takes no options"),
        (with_(pruner="sometimes"), "pruner: unknown pruner 'sometimes'"),
        (with_(pruner={"name": "median", "warmup": 3}), "pruner.warmup: unknown option for MedianPruner"),
        (with_(pruner={"name": "rate_bound", "confidence": 2.0}), "confidence must be in (0, 1)"),
        (with_(pruner="rate_bound", objective="max_gap"), "pruner: rate_bound needs a rate objective"),
        (with_(pruner="median", objective=["spurious_rate", "max_gap"]), "single-objective hunts only"),
        (with_(repeats="forever"), "repeats: expected one of ['accumulate', 'skip']"),
    ],
)
def test_bad_search_choices_name_the_field(raw, message):
    with pytest.raises(PipelineError) as info:
        parse_pipeline(raw)
    assert message in str(info.value)


def test_any_optuna_sampler_and_pruner_by_name_with_options():
    import optuna

    from study.search.samplers import make_pruner, make_sampler
    from study.spec import spec_warnings, startup_trials

    spec = parse_pipeline(with_(sampler={"name": "tpe", "n_startup_trials": 5, "seed": 3}, trials=12))
    sampler = make_sampler(spec)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert startup_trials(spec) == 5 and spec_warnings(spec) == []
    for name, cls in [
        ("BruteForceSampler", optuna.samplers.BruteForceSampler),
        ("brute_force", optuna.samplers.BruteForceSampler),
        ("qmc", optuna.samplers.QMCSampler),
        ("nsga2", optuna.samplers.NSGAIISampler),
        ("random", optuna.samplers.RandomSampler),
    ]:
        assert isinstance(make_sampler(parse_pipeline(with_(sampler=name))), cls), name
    assert isinstance(make_pruner(parse_pipeline(GOOD)), optuna.pruners.NopPruner)
    median = make_pruner(parse_pipeline(with_(pruner={"name": "median", "n_startup_trials": 2})))
    assert isinstance(median, optuna.pruners.MedianPruner)
    # TPE's default start-up is 10 random trials: 8 trials never reach the model
    (warning,) = spec_warnings(parse_pipeline(with_(sampler="tpe", trials=8)))
    assert "10 random start-up trials" in warning
    assert spec_warnings(parse_pipeline(with_(sampler="tpe", trials=8)), budgeted=True) == []


def test_overrides_are_validated_like_the_file_and_recorded(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    spec = load_pipeline(path, ["train.lr=0.05", "runs_per_trial=64", "sampler.n_startup_trials=3"])
    assert spec.train.lr == 0.05 and spec.runs_per_trial == 64
    assert spec.sampler == "tpe" and spec.sampler_options == {"n_startup_trials": 3}
    assert spec.overrides == ("train.lr=0.05", "runs_per_trial=64", "sampler.n_startup_trials=3")
    assert load_pipeline(path, ["train.tol=1e-7", "search.k.high=6"]).train.tol == 1e-7
    for overrides, message in [
        (["train.lr=abc"], "train.lr: expected a number, got 'abc'"),
        (["runs_per_trial=0"], "runs_per_trial: must be >= 1"),
        (["lr"], "override 'lr': expected FIELD=VALUE"),
        (["runs_per_trial.x=1"], "runs_per_trial is 4, not a mapping"),
        (["colour=blue"], "unknown top-level field(s) ['colour']"),
    ]:
        with pytest.raises(PipelineError) as info:
            load_pipeline(path, overrides)
        assert message in str(info.value) and str(path) in str(info.value), info.value
