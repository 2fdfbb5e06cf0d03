"""A hunt's identity: which pipeline fields a resumed hunt may change (the scheduling ones, marked in the
HuntSpec's field metadata) and which it may not; and the seed scheme it began with."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from study.diagnostics.critical import DiagnosticsConfig
from study.diagnostics.verify import FamilyVerification
from study.search.hunt_study import OFFSET, SEQUENCE
from study.search.identity import (
    IDENTITY_FILE,
    SCHEDULING,
    HuntInputError,
    check_folder,
    seed_scheme,
    write_identity,
)
from study.spec import HuntSpec, ParamSpec, parse_pipeline
from study.spec_fields import Resources
from tests.cluster.conftest import TINY

BASE = parse_pipeline({"name": "ident", **TINY})

#: a HuntSpec field -> another value of it (a field missing here fails the first test: say which it is)
CHANGES: dict[str, Any] = {
    "name": "other",
    "landscape": "deep_linear",
    "fixed": {"d": 5},
    "search": (ParamSpec("k", "int", low=3, high=5),),
    "derived": {"n": "k + 1"},
    "description": "a new description",
    "init_scheme": "he-normal",
    "init_scale": 0.5,
    "procedure": "two_phase_sgd",
    "train": dataclasses.replace(BASE.train, lr=0.05),
    "diagnostics": DiagnosticsConfig(gap_tol=1e-4),
    "verify": FamilyVerification(per_family=0),
    "runs_per_trial": 8,
    "chunk_size": 4,
    "seed": 1,
    "objective": ("max_gap",),
    "sampler": "qmc",
    "sampler_options": {"seed": 3},
    "pruner": "median",
    "pruner_options": {"n_startup_trials": 2},
    "repeats": "skip",
    "overrides": ("trials=3",),
    "trials": 7,
    "dtype": "float32",
    "resources": Resources(device="cpu", gpus_per_chunk=0.5, cpus_per_chunk=2.0),
    "max_inflight": 3,
    "source": "elsewhere.yaml",
}
EXPECTED_SCHEDULING = {
    "description",
    "chunk_size",
    "overrides",
    "trials",
    "resources",
    "max_inflight",
    "source",
    "verify",  # how many members of a family are verified in full: cost, not verdicts
}


def test_every_field_is_classified_and_scheduling_comes_from_the_field_metadata():
    assert set(CHANGES) == {f.name for f in dataclasses.fields(HuntSpec)}
    assert set(SCHEDULING) == EXPECTED_SCHEDULING
    assert "gpu_fraction" not in SCHEDULING


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_changing_a_scheduling_field_resumes_and_any_other_is_refused(tmp_path, field):
    write_identity(BASE, tmp_path)
    changed = dataclasses.replace(BASE, **{field: CHANGES[field]})
    assert getattr(changed, field) != getattr(BASE, field)
    if field in SCHEDULING:
        check_folder(changed, tmp_path)  # resumes
    else:
        with pytest.raises(HuntInputError) as info:
            check_folder(changed, tmp_path)
        assert ("not 'other'" if field == "name" else field) in str(info.value)


@pytest.mark.parametrize("field", ["device", "gpus_per_chunk", "cpus_per_chunk"])
def test_each_resources_setting_resumes(tmp_path, field):
    write_identity(BASE, tmp_path)
    other = {"device": "cuda", "gpus_per_chunk": 1.0, "cpus_per_chunk": 4.0}[field]
    check_folder(dataclasses.replace(BASE, resources=Resources(**{field: other})), tmp_path)


def test_an_identity_written_when_resources_counted_still_resumes(tmp_path):
    identity = write_identity(BASE, tmp_path)
    # what the code before wrote: resources among the resolved fields, and a hash over them
    identity["resolved"].update({"resources.device": "auto", "resources.gpus_per_chunk": 0.25})
    identity["hash"] = "0123456789abcdef"
    (tmp_path / IDENTITY_FILE).write_text(json.dumps(identity))
    check_folder(dataclasses.replace(BASE, resources=Resources(gpus_per_chunk=1.0)), tmp_path)
    with pytest.raises(HuntInputError, match="train.lr"):
        check_folder(dataclasses.replace(BASE, train=CHANGES["train"]), tmp_path)


def test_the_seed_scheme_is_the_one_the_hunt_began_with(tmp_path):
    assert seed_scheme(None, None) == SEQUENCE  # a new hunt
    assert write_identity(BASE, tmp_path)["seeds"] == SEQUENCE
    old = {"name": "ident", "hash": "x", "resolved": {}}  # written before the marker existed
    assert seed_scheme(None, old) == OFFSET
    assert seed_scheme(old, {**old, "seeds": SEQUENCE}) == OFFSET  # the study numbers the trials
    assert seed_scheme({**old, "seeds": SEQUENCE}, old) == SEQUENCE
