"""Procedures apart from landscapes: every registered procedure passes one contract, and every setting a
run logs reaches the code that trains it (changing it changes what runs)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from study.landscapes.registry import LANDSCAPES, default_procedure, make_landscape
from study.procedures.registry import PROCEDURES
from study.record import CORE_COLUMNS, RunBatch, records
from study.record.schema import HYPOTHESIS_PREFIX
from study.runs import RunSpec, run_replicas
from study.spec import PipelineError, parse_pipeline

#: procedure -> a tiny run spec it trains in seconds
TINY: dict[str, RunSpec] = {
    "descent": RunSpec(
        "teacher_student",
        {"k": 2, "n": 3},
        train=PROCEDURES["descent"].config_cls(lr=8.0, max_steps=400, newton_polish=True),
    ),
    "two_phase_sgd": RunSpec(
        "classification",
        {"hidden": 4, "max_train": 24, "max_test": 10},
        train=PROCEDURES["two_phase_sgd"].config_cls(
            init="adversarial",
            regularization=True,
            adv_copies=2,
            phase1_epochs=2,
            phase2_epochs=2,
            batch_size=8,
            target_acc=0.99,
        ),
    ),
}
SEEDS = [5, 6, 7]

#: procedure -> field -> another value that must change the runs (every field is listed), or
#: (value, settings applied on both sides) for a field that matters only when another one is set
PERTURB: dict[str, dict[str, Any]] = {
    "descent": {
        "lr": 0.05,
        "tol": 0.5,
        "max_steps": 50,
        "restart_grad_norm": 1e-3,
        "max_restarts": 0,
        "newton_polish": False,
        "newton_polish_at": 1e30,
        "newton_max_steps": 1,
        "curve_points": 5,
        "stall_window": (5, {"stall_rtol": 0.5}),
        # settings of the stall rule matter once it is on: compared with it on, on both sides
        "stall_rtol": (1e-12, {"stall_window": 5, "stall_rtol": 0.5}),
        "stall_lr_factor": (0.9, {"stall_window": 5, "stall_rtol": 0.5}),
        "stall_reductions": (0, {"stall_window": 5, "stall_rtol": 0.5}),
        "engine": "torch",  # the same end points (tests/training/test_engines.py), another engine column
    },
    "two_phase_sgd": {
        "init": "random",
        "regularization": False,
        "adv_copies": 1,
        "adv_zero_fraction": 0.5,
        "phase1_epochs": 1,
        "phase2_epochs": 1,
        "lr": 0.05,
        "batch_size": 5,
        "target_acc": 0.05,
        # phase 1 runs only from an adversarial init; reached at once, it stops after 1 of 5 epochs
        "phase1_target_acc": (1e-6, {"init": "adversarial", "phase1_epochs": 5}),
        "momentum": 0.5,
        "weight_decay": 0.1,
        "shift_pixels": 0,
        "train_dtype": "float32",
        "spectrum": True,
    },
}


def fingerprint(batch: RunBatch) -> list[Any]:
    frame = batch.frame.drop(columns=["train_seconds_per_run", "seconds_per_run"])
    return [
        frame.round(12).astype(str).to_numpy().tolist(),
        np.round(batch.theta, 12).tolist(),
        batch.curve.shape,
    ]


def test_every_landscape_has_a_registered_default_procedure() -> None:
    for name in LANDSCAPES:
        assert default_procedure(name) in PROCEDURES


@pytest.mark.parametrize("name", sorted(PROCEDURES))
def test_procedure_contract(name: str) -> None:
    spec = TINY[name]
    batch = run_replicas(spec, SEEDS)
    R = len(SEEDS)
    assert batch.theta.shape[0] == R and batch.theta0.shape == batch.theta.shape
    assert batch.curve.shape == (R, len(batch.curve_steps)) and batch.eigenvalues.shape[0] == R
    assert list(batch.frame["seed"]) == SEEDS
    typed = records(batch.frame)  # every core column of the run record is there and typed
    assert {c for c in CORE_COLUMNS} <= set(batch.frame.columns) and len(typed) == R
    # and nothing undeclared: the core columns, the procedure's declared ones, the landscape's namespace
    landscape = make_landscape(spec.landscape, spec.params)
    namespace = set(landscape.run_diagnostics(torch.as_tensor(batch.theta, dtype=torch.float64)))
    namespace |= {f"{HYPOTHESIS_PREFIX}{k}" for k in landscape.hypotheses()}
    declared = set(CORE_COLUMNS) | set(PROCEDURES[name].columns) | namespace
    written = set(batch.frame.columns)
    assert written == declared, (
        sorted(written - declared),
        sorted(declared - written),
    )  # undeclared, missing
    # batched == one at a time (each replica depends only on its seed)
    alone = run_replicas(spec, [SEEDS[1]])
    np.testing.assert_allclose(batch.theta[1], alone.theta[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", sorted(PROCEDURES))
def test_every_logged_training_setting_changes_what_runs(name: str) -> None:
    spec = TINY[name]
    fields = {f.name for f in dataclasses.fields(spec.train)}
    assert set(PERTURB[name]) == fields, "list every field of the procedure's configuration"
    assert {f"train.{f}" for f in fields} <= set(spec.flat_config())
    for field, change in PERTURB[name].items():
        value, context = change if isinstance(change, tuple) else (change, {})
        base = dataclasses.replace(spec, train=dataclasses.replace(spec.train, **context))
        changed = dataclasses.replace(base, train=dataclasses.replace(base.train, **{field: value}))
        assert fingerprint(run_replicas(changed, SEEDS[:2])) != fingerprint(run_replicas(base, SEEDS[:2])), (
            f"train.{field} changed nothing"
        )


def test_a_classification_pipeline_routes_lr_to_its_procedure() -> None:
    raw = {
        "name": "lr_reaches",
        "landscape": "classification",
        "fixed": {"hidden": 4, "max_train": 24, "lr": 0.05, "batch_size": 8},
        "search": {"init": {"type": "categorical", "choices": ["random", "adversarial"]}},
        "objective": "test_error",
    }
    spec = parse_pipeline(raw)
    assert spec.procedure == "two_phase_sgd"
    run = spec.run_spec(spec.resolve({"init": "adversarial"}))
    assert run.train.lr == 0.05 and run.train.batch_size == 8 and run.train.init == "adversarial"
    assert "lr" not in run.params and run.flat_config()["train.lr"] == 0.05
    with pytest.raises(PipelineError, match="procedure"):
        parse_pipeline({**raw, "procedure": "nope"})
    with pytest.raises(PipelineError, match="extra"):
        parse_pipeline({**raw, "extra": {"a": 1}})  # a field nothing reads is refused
