"""Run seeds: a new hunt draws them from a SeedSequence keyed by (hunt seed, seed base, replica), so no two
runs of any hunts share an initialization; a hunt begun with the old offsets keeps them when resumed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import torch
import yaml

from study.landscapes.base import WIDE_SEEDS
from study.landscapes.registry import make_landscape
from study.search.driver import IDENTITY_ATTR, HuntOptions, run_hunt
from study.search.hunt_study import OFFSET, SEQUENCE, trial_seeds
from study.search.identity import IDENTITY_FILE, write_identity
from study.search.samplers import make_storage
from study.spec import parse_pipeline
from tests.cluster.conftest import TINY

FIXTURE = Path(__file__).parents[1] / "fixtures" / "hunt_v1"  # written by the code before schema 2
PIPELINE = {"name": "seeds", **TINY}


def test_sequence_seeds_never_repeat_where_offset_seeds_did():
    spec0 = parse_pipeline(PIPELINE)
    spec1 = parse_pipeline({**PIPELINE, "seed": 1})
    # offsets: trial 10,000 of hunt seed 0 trains the seeds of trial 0 of hunt seed 1, and a
    # configuration's run 100,000 the first seed of the next trial
    assert trial_seeds(spec0, 10_000, 3, scheme=OFFSET) == trial_seeds(spec1, 0, 3, scheme=OFFSET)
    assert trial_seeds(spec0, 0, 100_001, scheme=OFFSET)[-1] == trial_seeds(spec0, 1, 1, scheme=OFFSET)[0]
    assert not set(trial_seeds(spec0, 10_000, 3)) & set(trial_seeds(spec1, 0, 3))
    many = trial_seeds(spec0, 0, 100_001)
    both = [*many, *trial_seeds(spec0, 1, 1_000), *trial_seeds(spec1, 0, 1_000)]
    assert len(set(both)) == len(both)
    assert all(WIDE_SEEDS <= s < 2**63 for s in both)  # int64 in the record; above every offset seed
    assert trial_seeds(spec0, 0, 5) == many[:5]  # a pure function of (hunt seed, seed base, replica)


def test_wide_seeds_differing_only_above_bit_32_initialize_apart():
    landscape = make_landscape("teacher_student", {"k": 3, "n": 3})
    seed = trial_seeds(parse_pipeline(PIPELINE), 0, 1)[0]
    twin = seed ^ (1 << 40)  # torch's generator keeps the low 32 bits: it would draw these alike
    theta = landscape.init([seed, twin])
    assert not torch.allclose(theta[0], theta[1])


def test_offset_seeds_and_their_initializations_match_the_schema_1_fixture():
    spec = parse_pipeline(yaml.safe_load((FIXTURE / "pipeline.yaml").read_text()))
    runs = pd.read_csv(FIXTURE / "runs.csv")
    for seed_base, rows in runs.groupby("seed_base"):
        assert list(rows["seed"]) == trial_seeds(spec, int(seed_base), len(rows), scheme=OFFSET)
        arrays = np.load(FIXTURE / "trials" / f"trial-{int(seed_base):05d}.npz")
        k = int(pd.read_csv(FIXTURE / "trials" / f"trial-{int(seed_base):05d}.csv")["param_k"].iloc[0])
        landscape = make_landscape("teacher_student", {"k": k, "n": k})
        theta0 = landscape.init([int(s) for s in arrays["seed"]])
        assert torch.equal(theta0, torch.as_tensor(arrays["theta0"]))  # old runs start where they did


def seeds_in(out: Path) -> dict[int, list[int]]:
    runs = pd.read_csv(out / "runs.csv")
    return {int(b): sorted(rows["seed"]) for b, rows in runs.groupby("seed_base")}


def forget_marker(out: Path, name: str | None = None) -> None:
    """Make the hunt's identity (the folder's, and the study's when ``name`` is given) what the code
    before the SeedSequence scheme wrote: no ``seeds``."""
    identity = json.loads((out / IDENTITY_FILE).read_text())
    identity.pop("seeds")
    (out / IDENTITY_FILE).write_text(json.dumps(identity))
    if name is not None:
        study = optuna.load_study(study_name=name, storage=make_storage(None, out))
        study.set_user_attr(IDENTITY_ATTR, json.dumps(identity))


def test_a_new_hunt_takes_the_sequence_and_an_old_one_keeps_its_offsets(tmp_path, ray_local):
    spec = parse_pipeline(PIPELINE)
    fresh = tmp_path / "fresh"
    run_hunt(spec, HuntOptions(out=fresh, trials=1, progress=False))
    assert json.loads((fresh / IDENTITY_FILE).read_text())["seeds"] == SEQUENCE
    assert seeds_in(fresh) == {0: sorted(trial_seeds(spec, 0, spec.runs_per_trial))}

    old = tmp_path / "old"
    old.mkdir()
    write_identity(spec, old)
    forget_marker(old)  # a folder begun before the scheme was recorded
    run_hunt(spec, HuntOptions(out=old, trials=1, progress=False))
    forget_marker(old, spec.name)
    run_hunt(spec, HuntOptions(out=old, trials=2, progress=False))  # resumed
    expected = {b: trial_seeds(spec, b, spec.runs_per_trial, scheme=OFFSET) for b in (0, 1)}
    assert seeds_in(old) == expected
    assert json.loads((old / IDENTITY_FILE).read_text())["seeds"] == OFFSET  # now said explicitly
