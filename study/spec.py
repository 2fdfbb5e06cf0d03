"""Pipelines as data: YAML files validated into a typed :class:`HuntSpec` before anything runs.

A pipeline says what differs from the defaults. Errors name the file and the field, e.g.
``pipelines/x.yaml: search.k.low: expected an integer, got 'six'``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from study import choices
from study.diagnostics.critical import DiagnosticsConfig
from study.diagnostics.verify import FamilyVerification
from study.errors import PipelineError
from study.expressions import evaluate
from study.landscapes.base import DTYPES, INIT_SCHEMES
from study.landscapes.registry import LANDSCAPES, default_procedure, landscape_config, supports_objective
from study.procedures.registry import PROCEDURES, procedure
from study.runs import RunSpec
from study.spec_fields import (
    ParamSpec,
    Resources,
    apply_overrides,
    checked_options,
    choice,
    dataclass_from,
    param_spec,
    parse_resources,
    typed,
)

OBJECTIVES = {
    # name: (direction, what it measures)
    "spurious_rate": ("maximize", "fraction of runs ending at a certified spurious minimum"),
    "classified_spurious_rate": ("maximize", "fraction of runs classified spurious_minimum"),
    "max_gap": ("maximize", "largest loss gap to L* among certified spurious minima (0 if none)"),
    "overparameterization": ("maximize", "n - k, the student's excess width"),
    "non_global_rate": ("maximize", "fraction of runs not ending at a global minimum"),
    "test_error": ("maximize", "mean test error of the trial's runs (classification)"),
}
REPEATS = ("accumulate", "skip")  # what a hunt does with a configuration it has already evaluated
RUN_KEYS = ("init_scheme", "init_scale")  # searchable run settings besides landscape and procedure fields
# metadata of the HuntSpec fields that say how a hunt is scheduled, not what its runs are (a hunt
# resumes with them changed; search/identity.py leaves them out of the pipeline's identity)
SCHEDULING = {"scheduling": True}
__all__ = [
    "HuntSpec",
    "ParamSpec",
    "PipelineError",
    "apply_overrides",
    "evaluate",
    "load_pipeline",
    "parse_pipeline",
]

TOP_LEVEL = {
    "name", "description", "landscape", "fixed", "search", "derived", "init_scheme", "init_scale",
    "procedure", "train", "diagnostics", "verify", "runs_per_trial", "chunk_size", "seed", "objective",
    "sampler", "trials", "dtype", "resources", "max_inflight", "pruner", "repeats",
}  # fmt: skip


@dataclass(frozen=True)
class HuntSpec:
    """A validated pipeline: what a hunt searches, how each run trains, and what it optimizes."""

    name: str
    landscape: str
    fixed: dict[str, Any]
    search: tuple[ParamSpec, ...]
    derived: dict[str, str] = field(default_factory=dict)
    description: str = field(default="", metadata=SCHEDULING)
    init_scheme: str = "xavier-normal"
    init_scale: float = 1.0
    procedure: str = ""  # "": the landscape's default procedure
    train: Any = None  # the procedure's configuration (None: its defaults)
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    verify: FamilyVerification = field(
        default=FamilyVerification(), metadata=SCHEDULING
    )  # cost, not verdicts
    runs_per_trial: int = 64
    chunk_size: int = field(default=32, metadata=SCHEDULING)
    seed: int = 0
    objective: tuple[str, ...] = ("spurious_rate",)
    sampler: str = "tpe"  # "grid" or an Optuna sampler by name (study.choices)
    sampler_options: dict[str, Any] = field(default_factory=dict)  # its constructor's options
    pruner: str = "none"  # an Optuna pruner by name, or rate_bound; off by default
    pruner_options: dict[str, Any] = field(default_factory=dict)
    repeats: str = "accumulate"  # a repeated configuration: "accumulate" more seeds, or "skip" it
    overrides: tuple[str, ...] = field(default=(), metadata=SCHEDULING)  # FIELD=VALUE from the command line
    trials: int = field(default=20, metadata=SCHEDULING)
    dtype: str = "float64"
    resources: Resources = field(default=Resources(), metadata=SCHEDULING)  # one chunk's Ray request
    max_inflight: int = field(default=0, metadata=SCHEDULING)  # 0: enough to keep every CPU busy
    source: str = field(default="<memory>", metadata=SCHEDULING)

    def __post_init__(self) -> None:
        name = self.procedure or default_procedure(self.landscape)
        object.__setattr__(self, "procedure", name)
        if self.train is None:
            object.__setattr__(self, "train", procedure(name).config_cls())

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o][0] for o in self.objective]

    def resolve(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Fixed values, then sampled ones, then derived expressions (e.g. ``n: k + excess``)."""
        values = {**self.fixed, **sampled}
        for name, expr in self.derived.items():
            values[name] = evaluate(expr, values)
        return values

    def run_spec(self, values: dict[str, Any]) -> RunSpec:
        """The :class:`RunSpec` of one trial from its resolved values: names of the procedure's fields
        set its configuration (e.g. ``lr``), the run keys set the initialization, the rest the landscape."""
        procedure_fields = self.procedure_fields
        params = {
            k: v
            for k, v in values.items()
            if k not in RUN_KEYS and k not in procedure_fields and k not in self.search_only
        }
        changes = {
            k: float(v) if isinstance(procedure_fields[k].default, float) else v
            for k, v in values.items()
            if k in procedure_fields
        }
        return RunSpec(
            landscape=self.landscape,
            params=params,
            train=dataclasses.replace(self.train, **changes) if changes else self.train,
            diagnostics=self.diagnostics,
            verify=self.verify,
            init_scheme=str(values.get("init_scheme", self.init_scheme)),
            init_scale=float(values.get("init_scale", self.init_scale)),
            dtype=self.dtype,
            procedure=self.procedure,
        )

    @property
    def procedure_fields(self) -> dict[str, dataclasses.Field[Any]]:
        return {f.name: f for f in dataclasses.fields(PROCEDURES[self.procedure].config_cls)}

    @property
    def search_only(self) -> set[str]:
        """Searched helper variables used only inside derived expressions (not landscape or procedure
        fields)."""
        fields = {f.name for f in dataclasses.fields(LANDSCAPES[self.landscape].config_cls)}
        fields |= set(self.procedure_fields)
        return {p.name for p in self.search if p.name not in fields and p.name not in RUN_KEYS}


def parse_pipeline(raw: Any, *, source: str = "<memory>") -> HuntSpec:
    """Validate a parsed YAML document into a :class:`HuntSpec`; raises :class:`PipelineError`."""
    try:
        return _parse(raw, source)
    except PipelineError as exc:
        raise PipelineError(f"{source}: {exc}") from None


def _parse(raw: Any, source: str) -> HuntSpec:
    if not isinstance(raw, dict):
        raise PipelineError("expected a mapping at the top level")
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        raise PipelineError(f"unknown top-level field(s) {unknown}; allowed: {sorted(TOP_LEVEL)}")
    for key in ("name", "landscape"):
        if key not in raw:
            raise PipelineError(f"{key}: required")
    name = typed("name", raw["name"], str, "a string")
    if not name or any(c in name for c in "/\\ "):
        raise PipelineError(f"name: must be non-empty without spaces or slashes, got {name!r}")
    landscape = typed("landscape", raw["landscape"], str, "a string")
    if landscape not in LANDSCAPES:
        raise PipelineError(f"landscape: unknown landscape {landscape!r}; known: {sorted(LANDSCAPES)}")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise PipelineError(f"fixed: expected a mapping, got {fixed!r}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in fixed.items()}
    search_raw = raw.get("search") or {}
    if not isinstance(search_raw, dict):
        raise PipelineError(f"search: expected a mapping, got {search_raw!r}")
    search = tuple(param_spec(f"search.{k}", k, v) for k, v in search_raw.items())
    derived = raw.get("derived") or {}
    if not isinstance(derived, dict):
        raise PipelineError(f"derived: expected a mapping of name: expression, got {derived!r}")
    derived = {str(k): str(v) for k, v in derived.items()}
    clash = sorted(set(fixed) & {p.name for p in search})
    if clash:
        raise PipelineError(f"search: {clash} also appear under fixed")

    objective_raw = raw.get("objective", "spurious_rate")
    objective = tuple(objective_raw) if isinstance(objective_raw, list) else (objective_raw,)
    for o in objective:
        if o not in OBJECTIVES:
            raise PipelineError(f"objective: unknown objective {o!r}; known: {sorted(OBJECTIVES)}")
        if not supports_objective(landscape, o):
            fits = sorted(x for x in OBJECTIVES if supports_objective(landscape, x))
            raise PipelineError(
                f"objective: {o!r} does not apply to landscape {landscape!r}; it supports {fits}"
            )
    default_sampler = "tpe" if len(objective) == 1 else "nsga2"
    sampler, sampler_options = choice("sampler", raw.get("sampler", default_sampler), default_sampler)
    pruner, pruner_options = choice("pruner", raw.get("pruner", "none"), "none")
    repeats = raw.get("repeats", "accumulate")
    if repeats not in REPEATS:
        raise PipelineError(f"repeats: expected one of {list(REPEATS)}, got {repeats!r}")
    ints = {}
    for key, default, low in (
        ("runs_per_trial", 64, 1),
        ("chunk_size", 32, 1),
        ("seed", 0, 0),
        ("trials", 20, 1),
        ("max_inflight", 0, 0),
    ):
        value = typed(key, raw.get(key, default), int, "an integer")
        if value < low:
            raise PipelineError(f"{key}: must be >= {low}, got {value}")
        ints[key] = value
    dtype = raw.get("dtype", "float64")
    if dtype not in DTYPES:
        raise PipelineError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    try:
        resources = parse_resources(raw.get("resources"))
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    init_scale = float(typed("init_scale", raw.get("init_scale", 1.0), (int, float), "a number"))
    procedure_name = typed("procedure", raw.get("procedure", default_procedure(landscape)), str, "a string")
    if procedure_name not in PROCEDURES:
        raise PipelineError(f"procedure: unknown procedure {procedure_name!r}; known: {sorted(PROCEDURES)}")
    spec = HuntSpec(
        name=name,
        description=str(raw.get("description", "")),
        landscape=landscape,
        fixed=fixed,
        search=search,
        derived=derived,
        init_scheme=typed("init_scheme", raw.get("init_scheme", "xavier-normal"), str, "a string"),
        init_scale=init_scale,
        procedure=procedure_name,
        train=dataclass_from("train", PROCEDURES[procedure_name].config_cls, raw.get("train")),
        diagnostics=dataclass_from("diagnostics", DiagnosticsConfig, raw.get("diagnostics")),
        verify=dataclass_from("verify", FamilyVerification, raw.get("verify")),
        objective=objective,
        sampler=sampler,
        sampler_options=sampler_options,
        pruner=pruner,
        pruner_options=pruner_options,
        repeats=repeats,
        dtype=dtype,
        resources=resources,
        source=source,
        **ints,
    )
    _check_corners(spec)
    _check_search_choices(spec)
    return spec


def _check_search_choices(spec: HuntSpec) -> None:
    """The sampler and the pruner exist, take the options given, and fit the objectives."""
    if spec.sampler == "grid":
        if spec.sampler_options:
            raise PipelineError(f"sampler: the grid takes no options, got {sorted(spec.sampler_options)}")
        for p in spec.search:
            p.grid_values()  # floats need explicit choices
    else:
        cls = choices.sampler_class(spec.sampler)
        if cls is None:
            raise PipelineError(
                f"sampler: unknown sampler {spec.sampler!r}; known: {choices.known('sampler')}"
            )
        checked_options("sampler", cls, sampler_options(spec))
    pruner = choices.pruner_class(spec.pruner)
    if pruner is None:
        raise PipelineError(f"pruner: unknown pruner {spec.pruner!r}; known: {choices.known('pruner')}")
    checked_options("pruner", pruner, spec.pruner_options)
    if pruner is not choices.PRUNERS["nop"] and len(spec.objective) > 1:
        raise PipelineError(f"pruner: Optuna prunes single-objective hunts only, got {list(spec.objective)}")
    if pruner is choices.RateBoundPruner and spec.objective[0] not in choices.RATE_OBJECTIVES:
        raise PipelineError(
            f"pruner: rate_bound needs a rate objective {list(choices.RATE_OBJECTIVES)}, "
            f"got {spec.objective[0]!r}"
        )


def sampler_options(spec: HuntSpec) -> dict[str, Any]:
    """The sampler's constructor options: the pipeline's, the hunt seed where the sampler takes a seed,
    and TPE's multivariate mode unless the pipeline says otherwise."""
    cls = choices.sampler_class(spec.sampler)
    options = dict(spec.sampler_options)
    allowed = choices.accepted_options(cls) if cls is not None else {}
    if "seed" in allowed:
        options.setdefault("seed", spec.seed)
    if cls is not None and cls.__name__ == "TPESampler":
        options.setdefault("multivariate", True)
    return options


def startup_trials(spec: HuntSpec) -> int | None:
    """How many trials the sampler draws at random before it models anything (None: not a model)."""
    cls = choices.sampler_class(spec.sampler)
    if cls is None:
        return None
    value = choices.option_default(cls, "n_startup_trials", sampler_options(spec))
    return int(value) if isinstance(value, int) else None


def spec_warnings(spec: HuntSpec, *, trials: int | None = None, budgeted: bool = False) -> list[str]:
    """Things that are valid but probably not meant (printed by the CLI, never fatal)."""
    out = []
    startup = startup_trials(spec)
    wanted = spec.trials if trials is None else trials
    if startup is not None and not budgeted and wanted <= startup:
        out.append(
            f"trials ({wanted}) <= the sampler's {startup} random start-up trials: {spec.sampler} never "
            f"models anything; raise trials, lower sampler.n_startup_trials or give --hours"
        )
    return out


def corner_values(spec: HuntSpec) -> list[dict[str, Any]]:
    """A few sampled points at which to validate the landscape config: every corner of small spaces."""
    options = []
    for p in spec.search:
        if p.kind == "categorical":
            options.append([(p.name, c) for c in p.choices])
        else:
            cast: Any = int if p.kind == "int" else float
            options.append([(p.name, cast(p.low)), (p.name, cast(p.high))])
    combos = list(itertools.islice(itertools.product(*options), 64))
    return [dict(c) for c in combos] or [{}]


def _check_corners(spec: HuntSpec) -> None:
    for sampled in corner_values(spec):
        try:
            values = spec.resolve(sampled)
        except PipelineError as exc:
            raise PipelineError(f"derived: {exc}") from None
        except (TypeError, ZeroDivisionError) as exc:
            raise PipelineError(f"derived: {exc}") from None
        try:
            run = spec.run_spec(values)
        except (TypeError, ValueError) as exc:
            point = ", ".join(f"{k}={v}" for k, v in sampled.items())
            raise PipelineError(f"train/fixed/search: {exc}" + (f" (at {point})" if point else "")) from None
        if run.init_scheme not in INIT_SCHEMES:
            raise PipelineError(f"init_scheme: expected one of {INIT_SCHEMES}, got {run.init_scheme!r}")
        if not (run.init_scale > 0 and math.isfinite(run.init_scale)):
            raise PipelineError(f"init_scale: must be > 0, got {run.init_scale}")
        try:
            landscape_config(spec.landscape, run.params)
        except ValueError as exc:
            where = "fixed/search" if sampled else "fixed"
            point = ", ".join(f"{k}={v}" for k, v in sampled.items())
            at = f" (at {point})" if point else ""
            raise PipelineError(f"{where}: {exc}{at}") from None


def load_pipeline(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> HuntSpec:
    """Read a pipeline file, apply command-line ``FIELD=VALUE`` overrides, and validate the result
    (the overrides are kept in ``HuntSpec.overrides``)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: pipeline file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from None
    source = str(path)
    try:
        raw = apply_overrides(raw, overrides)
    except PipelineError as exc:
        raise PipelineError(f"{source}: {exc}") from None
    if overrides:
        source = f"{path} with {' '.join(overrides)}"
    spec = parse_pipeline(raw, source=source)
    return dataclasses.replace(spec, source=str(path), overrides=tuple(overrides))
