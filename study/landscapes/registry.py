"""The registry that names landscapes: a new landscape is one module plus one entry here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from study.landscapes.base import Landscape
from study.landscapes.classification import Classification, ClassificationConfig
from study.landscapes.deep_leaky import DeepLeaky, DeepLeakyConfig
from study.landscapes.deep_linear import DeepLinear, DeepLinearConfig
from study.landscapes.piecewise_linear import PiecewiseLinear, PiecewiseLinearConfig
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig


@dataclass(frozen=True)
class LandscapeEntry:
    """A landscape's configuration dataclass and its constructor, and the parts that live with it.

    ``report``: dotted path of the module whose ``REPORT`` adds the landscape's sections to the study
    report (:mod:`study.reports.extension`; imported only when such a report is built), "" for none.
    ``objectives``: the landscape-owned objectives it supports (they read columns or values only this
    landscape has); an objective no entry lists reads the core run record and fits every landscape.
    """

    config_cls: type
    build: type[Landscape]
    report: str = ""
    objectives: frozenset[str] = frozenset()


LANDSCAPES: dict[str, LandscapeEntry] = {
    "teacher_student": LandscapeEntry(
        TeacherStudentConfig,
        TeacherStudent,
        report="study.landscapes.teacher_student.report",
        objectives=frozenset({"overparameterization"}),
    ),
    "classification": LandscapeEntry(
        ClassificationConfig,
        Classification,
        report="study.landscapes.classification_report",
        objectives=frozenset({"test_error"}),
    ),
    "deep_linear": LandscapeEntry(DeepLinearConfig, DeepLinear),
    "deep_leaky": LandscapeEntry(DeepLeakyConfig, DeepLeaky),
    "piecewise_linear": LandscapeEntry(PiecewiseLinearConfig, PiecewiseLinear),
}


def landscape_config(name: str, params: dict[str, Any]) -> Any:
    """Validate ``params`` into the landscape's config dataclass; errors name the field."""
    if name not in LANDSCAPES:
        raise ValueError(f"landscape: unknown landscape {name!r}; known: {sorted(LANDSCAPES)}")
    cls = LANDSCAPES[name].config_cls
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(f"{name}: unknown field(s) {unknown}; allowed: {sorted(fields)}")
    missing = [
        f.name
        for f in fields.values()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in params
    ]
    if missing:
        raise ValueError(f"{name}: missing required field(s) {missing}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def default_procedure(name: str) -> str:
    """The procedure that trains the named landscape unless a pipeline names another."""
    if name not in LANDSCAPES:
        raise ValueError(f"landscape: unknown landscape {name!r}; known: {sorted(LANDSCAPES)}")
    return LANDSCAPES[name].build.default_procedure


def supports_objective(name: str, objective: str) -> bool:
    """Whether the named landscape supports ``objective``: one it lists, or one no landscape owns."""
    owned = {o for entry in LANDSCAPES.values() for o in entry.objectives}
    return objective in LANDSCAPES[name].objectives or objective not in owned


def make_landscape(
    name: str,
    params: dict[str, Any],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Landscape:
    """Build the named landscape from plain parameters (as found in a pipeline file)."""
    return LANDSCAPES[name].build(landscape_config(name, params), device=device, dtype=dtype)
