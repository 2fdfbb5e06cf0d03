"""The checked fields of a pipeline: typed values, searched parameters, option mappings and command-line
``FIELD=VALUE`` overrides. Every error names the field."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import yaml

from study import choices
from study.errors import PipelineError


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: int/float ranges (optionally log or stepped) or categorical choices."""

    name: str
    kind: str  # "int" | "float" | "categorical"
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def grid_values(self) -> list[Any]:
        """The values a grid sampler visits (ints: every step; floats need explicit choices)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            assert self.low is not None and self.high is not None
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise PipelineError(f"search.{self.name}: a grid sampler needs categorical choices for floats")


# ---- validation ---------------------------------------------------------------------------------------
def typed(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise PipelineError(f"{where}: expected {what}, got {value!r}")
    if not isinstance(value, kind):
        raise PipelineError(f"{where}: expected {what}, got {value!r}")
    return value


def param_spec(where: str, name: str, raw: Any) -> ParamSpec:
    if not isinstance(raw, dict):
        raise PipelineError(f"{where}: expected a mapping with a 'type', got {raw!r}")
    kind = raw.get("type")
    allowed = {
        "int": {"type", "low", "high", "step", "log"},
        "float": {"type", "low", "high", "step", "log"},
        "categorical": {"type", "choices"},
    }
    if kind not in allowed:
        raise PipelineError(f"{where}.type: expected one of int, float, categorical; got {kind!r}")
    unknown = sorted(set(raw) - allowed[kind])
    if unknown:
        raise PipelineError(f"{where}: unknown key(s) {unknown} for type {kind}")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise PipelineError(f"{where}.choices: expected a non-empty list")
        frozen = tuple(tuple(c) if isinstance(c, list) else c for c in choices)
        return ParamSpec(name, kind, choices=frozen)
    number: type | tuple[type, ...] = int if kind == "int" else (int, float)
    what = "an integer" if kind == "int" else "a number"
    for key in ("low", "high"):
        if key not in raw:
            raise PipelineError(f"{where}.{key}: required for type {kind}")
        typed(f"{where}.{key}", raw[key], number, what)
    low, high = raw["low"], raw["high"]
    if low > high:
        raise PipelineError(f"{where}: low ({low}) must be <= high ({high})")
    log = bool(typed(f"{where}.log", raw.get("log", False), bool, "true or false"))
    if log and low <= 0:
        raise PipelineError(f"{where}.low: must be > 0 when log is true, got {low}")
    step = raw.get("step")
    if step is not None:
        typed(f"{where}.step", step, number, what)
        if step <= 0:
            raise PipelineError(f"{where}.step: must be > 0, got {step}")
    return ParamSpec(name, kind, low=low, high=high, step=step, log=log)


def dataclass_from(where: str, cls: type, raw: Any) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise PipelineError(f"{where}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise PipelineError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(fields)}")
    values = {}
    for key, value in raw.items():
        default = fields[key].default
        if isinstance(default, bool):
            typed(f"{where}.{key}", value, bool, "true or false")
        elif isinstance(default, int):
            typed(f"{where}.{key}", value, int, "an integer")
        elif isinstance(default, float):
            typed(f"{where}.{key}", value, (int, float), "a number")
            value = float(value)
        values[key] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"{where}: {exc}") from None


def choice(where: str, raw: Any, default: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``{name: ..., option: value, ...}`` (name defaults to ``default``) -> (name, options)."""
    if isinstance(raw, str):
        return raw, {}
    if isinstance(raw, dict):
        name = raw.get("name", default)
        if not isinstance(name, str):
            raise PipelineError(f"{where}.name: expected a {where} name such as tpe, got {name!r}")
        options = {str(k): tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k != "name"}
        return name, options
    raise PipelineError(f"{where}: expected a name or a mapping with a name, got {raw!r}")


def checked_options(where: str, cls: type, options: dict[str, Any]) -> None:
    allowed = choices.accepted_options(cls)
    for key, value in options.items():
        if key not in allowed:
            raise PipelineError(
                f"{where}.{key}: unknown option for {cls.__name__}; allowed: {sorted(allowed)}"
            )
        default = allowed[key].default  # options whose default is a number or a flag keep its type
        if isinstance(default, bool):
            typed(f"{where}.{key}", value, bool, "true or false")
        elif isinstance(default, int):
            typed(f"{where}.{key}", value, int, "an integer")
        elif isinstance(default, float):
            typed(f"{where}.{key}", value, (int, float), "a number")
    try:
        choices.build(cls, options)
    except (TypeError, ValueError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"{where}: {cls.__name__}({options}): {first}") from None


def _override_value(text: str) -> Any:
    """A command-line value read as YAML (``0.05``, ``[3, 4]``, ``true``), with ``1e-3`` a number too."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_overrides(raw: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """The parsed pipeline with ``FIELD=VALUE`` changes applied (dotted fields reach into mappings:
    ``train.lr=0.05``, ``search.k.high=12``, ``sampler.n_startup_trials=5``); validation comes after."""
    if not overrides:
        return raw
    if not isinstance(raw, dict):
        raise PipelineError("expected a mapping at the top level")
    out = copy.deepcopy(raw)
    for item in overrides:
        field_path, sep, text = item.partition("=")
        parts = field_path.strip().split(".")
        if not sep or not all(parts):
            raise PipelineError(f"override {item!r}: expected FIELD=VALUE, e.g. train.lr=0.05")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, str) and part in ("sampler", "pruner") and depth == 0:
                child = node[part] = {"name": child}  # sampler: tpe -> {name: tpe, option: value}
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise PipelineError(f"override {item!r}: {where} is {child!r}, not a mapping")
            node = child
        node[parts[-1]] = _override_value(text)
    return out


# ---- resources: what one chunk of replicas asks Ray for (read by study.dispatch) -------------------
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Resources:
    """A chunk's request: ``cpus_per_chunk`` CPUs and, by ``device``,

    - ``cpu``: no GPU; the chunk trains on the CPU;
    - ``cuda``: always ``gpus_per_chunk`` of a GPU, whether or not the cluster has one yet (an autoscaler
      starts GPU nodes for the waiting tasks); the chunk trains on the GPU Ray assigned it, and fails
      where it has none;
    - ``auto``: ``gpus_per_chunk`` of a GPU while the cluster has GPUs, else CPU only (one machine as
      it is: a laptop trains on its CPU, a workstation on its GPU).
    """

    device: str = "auto"
    gpus_per_chunk: float = 0.25
    cpus_per_chunk: float = 1.0

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device: expected one of {', '.join(DEVICES)}; got {self.device!r}")
        whole = self.gpus_per_chunk >= 1 and self.gpus_per_chunk % 1 == 0
        if not (0 < self.gpus_per_chunk <= 1 or whole):  # Ray's rule for a task's GPU request
            raise ValueError(
                f"gpus_per_chunk: must be in (0, 1] or a whole number, got {self.gpus_per_chunk}"
            )
        if not self.cpus_per_chunk > 0 or not math.isfinite(self.cpus_per_chunk):
            raise ValueError(f"cpus_per_chunk: must be > 0, got {self.cpus_per_chunk}")

    def uses_gpu(self, cluster_gpus: float) -> bool:
        """Whether a chunk submitted now asks for a GPU share."""
        return self.device == "cuda" or (self.device == "auto" and cluster_gpus > 0)

    def task_options(self, cluster_gpus: float) -> dict[str, Any]:
        """Ray task options for a chunk submitted while the cluster has ``cluster_gpus`` GPUs."""
        options: dict[str, Any] = {"num_cpus": self.cpus_per_chunk}
        if self.uses_gpu(cluster_gpus):
            options["num_gpus"] = self.gpus_per_chunk
        return options

    def chunks_that_fit(self, cpus: float, gpus: float) -> int:
        """How many chunks run at once on ``cpus`` CPUs and ``gpus`` GPUs."""
        fit = math.floor(cpus / self.cpus_per_chunk + 1e-9)
        if self.uses_gpu(gpus):
            fit = min(fit, math.floor(gpus / self.gpus_per_chunk + 1e-9))
        return max(0, fit)


def parse_resources(raw: Any, where: str = "resources") -> Resources:
    """A pipeline's ``resources`` mapping; the ValueError names the field (``resources.device: ...``)."""
    if raw is None:
        return Resources()
    fields = ("cpus_per_chunk", "device", "gpus_per_chunk")
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with {', '.join(fields)}; got {raw!r}")
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {list(fields)}")
    for key in ("gpus_per_chunk", "cpus_per_chunk"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{where}.{key}: expected a number, got {value!r}")
    defaults = Resources()
    try:
        return Resources(
            device=raw.get("device", defaults.device),
            gpus_per_chunk=float(raw.get("gpus_per_chunk", defaults.gpus_per_chunk)),
            cpus_per_chunk=float(raw.get("cpus_per_chunk", defaults.cpus_per_chunk)),
        )
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None
