"""Optuna samplers and storages for a hunt."""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path
from typing import Any

import optuna

from study import choices
from study.record.files import create_whole
from study.spec import HuntSpec, ParamSpec, sampler_options


def make_sampler(spec: HuntSpec) -> optuna.samplers.BaseSampler:
    """The pipeline's sampler with its options (TPE seeded and multivariate by default); for a grid,
    a seeded random sampler behind the queue of grid points (enqueue_grid)."""
    if spec.sampler == "grid":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    cls = choices.sampler_class(spec.sampler)
    assert cls is not None, spec.sampler  # validated with the pipeline
    sampler: optuna.samplers.BaseSampler = choices.build(cls, sampler_options(spec))
    return sampler


def make_pruner(spec: HuntSpec) -> optuna.pruners.BasePruner:
    """The pipeline's pruner (NopPruner unless it names one)."""
    cls = choices.pruner_class(spec.pruner)
    assert cls is not None, spec.pruner
    pruner: optuna.pruners.BasePruner = choices.build(cls, spec.pruner_options)
    return pruner


def enqueue_grid(
    study: optuna.Study,
    spec: HuntSpec,
    *,
    skip: set[int] | frozenset[int] = frozenset(),
    limit: int | None = None,
) -> int:
    """Enqueue grid points not yet finished, running or waiting (at most ``limit``); returns how many
    were added.

    Ask-and-tell with Optuna's GridSampler raises once the grid is exhausted (it calls
    ``Study.stop``), so a grid is a queue of fixed trials instead: resumable and exact. Trials numbered
    in ``skip`` (cut short by an interruption and re-run) do not count as visited. The driver queues
    one point before each ask, so a hunt that stops early leaves no trial waiting.
    """
    labels = grid_labels(spec)
    names = list(labels)
    seen = set()
    for t in study.get_trials(deepcopy=False):
        if t.number in skip:
            continue
        seen.add(tuple(t.params.get(n, t.system_attrs.get("fixed_params", {}).get(n)) for n in names))
    added = 0
    for combo in itertools.product(*(labels[n] for n in names)):
        if limit is not None and added >= limit:
            break
        if combo not in seen:
            study.enqueue_trial(dict(zip(names, combo, strict=True)))
            added += 1
    return added


def grid_size(spec: HuntSpec) -> int:
    size = 1
    for p in spec.search:
        size *= len(p.grid_values())
    return size


def suggest(trial: optuna.Trial, param: ParamSpec) -> Any:
    """Ask the trial for one parameter; categorical tuples (e.g. widths) travel as strings."""
    if param.kind == "categorical":
        labels = [_label(c) for c in param.choices]
        picked = trial.suggest_categorical(param.name, labels)
        return param.choices[labels.index(picked)]
    if param.kind == "int":
        assert param.low is not None and param.high is not None
        return trial.suggest_int(
            param.name, int(param.low), int(param.high), step=int(param.step or 1), log=param.log
        )
    assert param.low is not None and param.high is not None
    return trial.suggest_float(
        param.name, float(param.low), float(param.high), step=param.step, log=param.log
    )


def _label(choice: Any) -> Any:
    if isinstance(choice, tuple):
        return "x".join(str(c) for c in choice)
    return choice


def grid_labels(spec: HuntSpec) -> dict[str, list[Any]]:
    return {p.name: [_label(c) for c in p.grid_values()] for p in spec.search}


def make_storage(url: str | None, out: Path) -> optuna.storages.BaseStorage:
    """An RDB storage (SQLite under ``out`` by default, with a generous lock timeout) or a journal
    file (``journal:///path``); any SQLAlchemy URL works, PostgreSQL included."""
    if url is None:
        out.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(out / 'optuna.db').resolve()}"
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal://") :]))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
        if url.startswith("sqlite:///"):
            _create_whole(Path(url[len("sqlite:///") :].split("?", 1)[0]), kwargs)
    else:
        kwargs = {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=None)


def _create_whole(path: Path, engine_kwargs: dict[str, Any]) -> None:
    """A new SQLite storage made whole (:func:`~study.record.files.create_whole`): two processes that
    create the schema in one file at once fail ("table studies already exists")."""

    def build(temporary: Path) -> None:
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{temporary}", engine_kwargs=engine_kwargs, heartbeat_interval=None
        )
        storage.engine.dispose()

    create_whole(path, build)


def dashboard_command(url: str | None, out: Path) -> str:
    """The ``optuna-dashboard`` command that opens the hunt's storage (as :func:`make_storage` reads
    ``url``), served on the loopback: journal files need the storage-class hint, SQLite a full URL."""
    if url is None:
        url = f"sqlite:///{(out / 'optuna.db').resolve()}"
    if url.startswith("journal://"):
        path = Path(url[len("journal://") :]).resolve()
        return (
            f"optuna-dashboard --host 127.0.0.1 --storage-class JournalFileStorage {shlex.quote(str(path))}"
        )
    return f"optuna-dashboard --host 127.0.0.1 {shlex.quote(url)}"
