"""Optuna samplers and pruners by name, with their options checked against their constructors.

A pipeline writes ``sampler: tpe`` or ``sampler: {name: tpe, n_startup_trials: 5, multivariate: true}``;
any sampler of ``optuna.samplers`` is accepted by its class name in any case, with or without the
``Sampler`` suffix (``BruteForceSampler``, ``brute_force``, ``qmc``, ``nsga2``), and likewise any pruner
of ``optuna.pruners`` plus :class:`RateBoundPruner` (``rate_bound``). ``grid`` is the hunt's own
resumable grid (every combination of the search space, queued one at a time).
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import optuna
from scipy import stats

# samplers needing constructor arguments a pipeline cannot give (a search space, another sampler)
_NOT_BY_NAME = {
    "GridSampler",
    "PartialFixedSampler",
    "BaseSampler",
    "BaseGASampler",
    "BasePruner",
    "PatientPruner",
}
_ALIASES = {"nsga2": "nsgaii", "nsga3": "nsgaiii", "none": "nop", "off": "nop"}
RATE_OBJECTIVES = ("spurious_rate", "classified_spurious_rate", "non_global_rate")


def _key(name: str, suffix: str) -> str:
    key = name.lower().replace("_", "").replace("-", "")
    key = key.removesuffix(suffix)
    return _ALIASES.get(key, key)


def _classes(module: Any, suffix: str) -> dict[str, type]:
    found = {}
    for name in module.__all__:
        cls = getattr(module, name)
        if isinstance(cls, type) and name not in _NOT_BY_NAME and name.lower().endswith(suffix):
            found[_key(name, suffix)] = cls
    return found


class RateBoundPruner(optuna.pruners.BasePruner):
    """Prunes a trial that cannot plausibly beat the best completed trial on a rate objective.

    The trial reports its rate after each chunk with ``step`` = runs so far; with s successes in m runs
    the one-sided Clopper-Pearson bound at ``confidence`` is u = Beta^-1(confidence; s + 1, m - s)
    (1 when s = m). Maximizing, the trial is pruned when u < the best completed value (minimizing:
    when the lower bound exceeds it), so a pruned trial's true rate is below the best with probability
    at least ``confidence``. Nothing is pruned before ``n_startup_trials`` trials completed.
    """

    def __init__(self, confidence: float = 0.99, n_startup_trials: int = 1) -> None:
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        if n_startup_trials < 0:
            raise ValueError(f"n_startup_trials must be >= 0, got {n_startup_trials}")
        self.confidence = confidence
        self.n_startup_trials = n_startup_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step <= 0:
            return False
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(done) < max(1, self.n_startup_trials):
            return False
        runs = int(step)
        successes = min(runs, max(0, round(trial.intermediate_values[step] * runs)))
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        values = [t.value for t in done if t.value is not None and math.isfinite(t.value)]
        if not values:
            return False
        if maximize:
            upper = (
                1.0
                if successes == runs
                else float(stats.beta.ppf(self.confidence, successes + 1, runs - successes))
            )
            return upper < max(values)
        lower = (
            0.0
            if successes == 0
            else float(stats.beta.ppf(1 - self.confidence, successes, runs - successes + 1))
        )
        return lower > min(values)


SAMPLERS: dict[str, type] = _classes(optuna.samplers, "sampler")
PRUNERS: dict[str, type] = {**_classes(optuna.pruners, "pruner"), "ratebound": RateBoundPruner}


def sampler_class(name: str) -> type | None:
    """The Optuna sampler class for a pipeline name, or None (``grid`` is not a class here)."""
    return SAMPLERS.get(_key(name, "sampler"))


def pruner_class(name: str) -> type | None:
    return PRUNERS.get(_key(name, "pruner"))


def known(kind: str) -> list[str]:
    """The names a pipeline may use for ``sampler`` or ``pruner``."""
    if kind == "sampler":
        return ["grid", *sorted(SAMPLERS)]
    return sorted(PRUNERS)


def accepted_options(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword options of a sampler or pruner constructor (besides ``self``)."""
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    return {
        name: p
        for name, p in params.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def option_default(cls: type, option: str, options: dict[str, Any]) -> Any:
    """The value ``option`` takes for ``cls(**options)``: given, else the constructor default, else None."""
    if option in options:
        return options[option]
    param = accepted_options(cls).get(option)
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def build(cls: type, options: dict[str, Any]) -> Any:
    """``cls(**options)`` with Optuna's experimental-feature warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(**options)
