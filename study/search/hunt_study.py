"""The hunt's Optuna study: open or resume it, recover trials an interrupted driver left running, ask for
a trial's configuration, and read finished trials back as a table. Public Optuna API only."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd

from study.landscapes.base import WIDE_SEEDS
from study.record import CLASSES
from study.runs import RunSpec
from study.search.samplers import enqueue_grid, grid_size, make_pruner, make_sampler, suggest
from study.spec import HuntSpec

INTERRUPTED = "interrupted; re-run"  # fail_reason of a trial replaced by a re-run (older hunts)
RERUN_OF = "rerun_of"  # user attr of a re-run: the number of the interrupted trial it replaces
OFFSET, SEQUENCE = "offset", "sequence"  # how a hunt turns seed bases into run seeds (trial_seeds)
SEED_SCHEMES = (OFFSET, SEQUENCE)


@dataclass(frozen=True)
class AskedTrial:
    """A trial Optuna proposed, resolved into the configuration its runs train."""

    trial: optuna.trial.Trial
    values: dict[str, Any]
    run_spec: RunSpec
    seed_base: int


def trial_seeds(spec: HuntSpec, seed_base: int, runs: int, *, scheme: str = SEQUENCE) -> list[int]:
    """Seeds of a trial's runs: a pure function of (hunt seed, seed base, replica index).

    ``sequence`` (every hunt begun since): numpy's SeedSequence keyed by the three, 62 bits of its state
    set above 2**62 (:data:`WIDE_SEEDS`, so every bit reaches the initialization): no two runs of any
    hunts share a seed, whatever their numbers of trials and runs (up to the odds of a 62-bit draw), and
    none equals an ``offset`` seed. ``offset`` (hunt folders made before): hunt seed x 1e9 + seed base
    x 1e5 + i, which repeats another trial's seeds past 10^4 trials or 10^5 runs a configuration."""
    if scheme == OFFSET:
        return [spec.seed * 1_000_000_000 + seed_base * 100_000 + i for i in range(runs)]
    if scheme != SEQUENCE:
        raise ValueError(f"seed scheme: expected one of {SEED_SCHEMES}, got {scheme!r}")
    key = [int(spec.seed), int(seed_base)]
    states = (np.random.SeedSequence([*key, i]).generate_state(1, np.uint64)[0] for i in range(runs))
    return [WIDE_SEEDS | int(state >> np.uint64(2)) for state in states]


def open_study(spec: HuntSpec, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the hunt's study or load it to resume, with the pipeline's sampler and pruner; the
    objectives are named (the dashboard shows ``spurious_rate``, not "Objective 0")."""
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=make_sampler(spec),
        pruner=make_pruner(spec),
        directions=spec.directions,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(spec.objective))
    return study


def queue_grid_point(study: optuna.Study, spec: HuntSpec) -> bool:
    """Before an ask on a grid: make sure one trial waits (a re-run, or the next grid point). False
    when the grid is exhausted. One point at a time, so a hunt that stops leaves none waiting."""
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    return bool(waiting) or enqueue_grid(study, spec, skip=replaced_trials(study), limit=1) > 0


def configuration_key(values: dict[str, Any]) -> str:
    """A trial's resolved configuration as a stable string (what makes two trials the same)."""
    return json.dumps(values, sort_keys=True, default=str)


def evaluated_configurations(study: optuna.Study) -> dict[str, list[int]]:
    """Configuration key -> numbers of the finished trials (complete or pruned) that trained it, read
    once (a driver adds the trials it asks itself: reading the study at every ask grows with the hunt)."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    replaced = replaced_trials(study)
    evaluated: dict[str, list[int]] = {}
    for t in study.get_trials(deepcopy=False, states=done):
        if t.number not in replaced and "values" in t.user_attrs:
            key = configuration_key(json.loads(t.user_attrs["values"]))
            evaluated.setdefault(key, []).append(t.number)
    return evaluated


def replaced_trials(study: optuna.Study) -> set[int]:
    """Numbers of trials an interruption cut short and a later trial re-runs with the same seeds."""
    trials = study.get_trials(deepcopy=False)
    replaced = {int(t.user_attrs[RERUN_OF]) for t in trials if RERUN_OF in t.user_attrs}
    replaced |= {t.number for t in trials if t.user_attrs.get("fail_reason") == INTERRUPTED}
    return replaced


def recover_interrupted(study: optuna.Study, spec: HuntSpec) -> int:
    """Tell FAIL to trials an interrupted driver left RUNNING and enqueue them again (same seeds)."""
    count = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        seed_base = t.user_attrs.get("seed_base", t.number)
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"seed_base": seed_base, RERUN_OF: t.number})
        count += 1
    return count


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count as done (a trial failed by an interruption is re-run, so it does not)."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    replaced = replaced_trials(study)
    return [t for t in study.get_trials(deepcopy=False, states=done) if t.number not in replaced]


UNLIMITED = 2**62  # a hunt with a time budget and no trial count: trials until the time is spent


def target_trials(spec: HuntSpec, wanted: int | None, *, budgeted: bool = False) -> int:
    """Finished trials a hunt aims at: ``wanted``; else the pipeline's, or no count at all when a time
    budget bounds the hunt; at most the grid's size."""
    target = wanted if wanted is not None else (UNLIMITED if budgeted else spec.trials)
    return min(target, grid_size(spec)) if spec.sampler == "grid" else target


def remaining_trials(
    study: optuna.Study, spec: HuntSpec, wanted: int | None, *, budgeted: bool = False
) -> int:
    """How many more trials to ask for: the target minus those finished."""
    return max(0, target_trials(spec, wanted, budgeted=budgeted) - len(finished_trials(study)))


def ask(
    study: optuna.Study,
    spec: HuntSpec,
    *,
    on_reject: Callable[[optuna.trial.Trial], None] | None = None,
) -> AskedTrial | None:
    """Ask Optuna for a trial and resolve it; a configuration the landscape rejects is told FAIL (None;
    ``on_reject`` is given the trial)."""
    trial = study.ask()
    values: dict[str, Any] = {p.name: suggest(trial, p) for p in spec.search}
    seed_base = int(trial.user_attrs.get("seed_base", trial.number))
    trial.set_user_attr("seed_base", seed_base)
    try:
        resolved = spec.resolve(values)
        run_spec = spec.run_spec(resolved)
        run_spec.validate()
    except ValueError as exc:
        trial.set_user_attr("fail_reason", str(exc))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if on_reject is not None:
            on_reject(trial)
        return None
    trial.set_user_attr("values", json.dumps(resolved, default=str))
    return AskedTrial(trial=trial, values=resolved, run_spec=run_spec, seed_base=seed_base)


def objective_names(study: optuna.Study) -> list[str]:
    """The objectives' names (the pipeline's, recorded with the study), as table columns."""
    names = study.user_attrs.get("objectives") or study.metric_names or []
    return [f"objective {n}" if n in ("runs", "state", "trial") else str(n) for n in names]


def hunt_summary(study: optuna.Study) -> tuple[int, int]:
    """(runs, re-verified counterexamples) over the hunt's finished trials."""
    table = trials_table(study)
    if not len(table):
        return 0, 0
    return int(table["runs"].sum()), int(table["counterexamples"].fillna(0).sum())


def trial_row(
    number: int,
    state: str,
    params: dict[str, Any],
    values: list[float] | None,
    user_attrs: dict[str, Any],
    names: list[str],
) -> dict[str, Any]:
    """A finished trial's row of the trials table (``names``: the objectives', see objective_names)."""
    summary = json.loads(user_attrs.get("summary", "{}"))
    row: dict[str, Any] = {"trial": number, "state": state, **params}
    for name, v in zip(names, values or [], strict=False):
        row[name] = v
    row["runs"] = summary.get("runs", 0)
    for cls, count in summary.get("counts", {}).items():
        row[cls] = count
    row["certified_spurious"] = summary.get("certified_spurious", 0)
    row["counterexamples"] = summary.get("counterexamples", row["certified_spurious"])
    row["lowest_spurious_loss"] = summary.get("lowest_spurious_loss")
    if state == "FAIL":
        row["fail_reason"] = user_attrs.get("fail_reason", "")
    return row


def table_of_trials(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of :func:`trial_row` as a table: class counts in a fixed order after ``runs``, 0 where a
    trial had none."""
    table = pd.DataFrame(rows)
    present = [c for c in CLASSES if c in table.columns]
    if present:
        table[present] = table[present].fillna(0).astype(int)
        rest = [c for c in table.columns if c not in present]
        at = rest.index("runs") + 1 if "runs" in rest else len(rest)
        table = table[rest[:at] + present + rest[at:]]
    return table


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per finished trial: state, parameters, objective values and the class counts."""
    replaced = replaced_trials(study)
    names = objective_names(study)
    return table_of_trials(
        [
            trial_row(t.number, t.state.name, t.params, t.values, t.user_attrs, names)
            for t in study.get_trials(deepcopy=False)
            # a trial replaced by a re-run, or still to come (queued grid points), is left out
            if t.number not in replaced and t.state.is_finished()
        ]
    )
