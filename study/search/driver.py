"""The ask-and-tell hunt driver: Optuna proposes trials, Ray runs their chunks, MLflow records every run.

The loop wires four parts, each with one job: the study (:mod:`study.search.hunt_study`), the pool of
workers (:mod:`study.dispatch.pool`), the tracker (:mod:`study.tracking.mlflow_sink`) and the writer
(:mod:`study.search.finish`, which writes the run record through :mod:`study.record`).

The study lives in persistent storage; running the same hunt again resumes it: finished trials are
kept, trials left running by an interrupted driver are told FAIL and re-run with the same seeds.
Only this driver writes to the storages.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from study.dispatch.pool import ChunkPool
from study.progress import progress_bar
from study.record import write_json
from study.search.finish import TrialWriter
from study.search.hunt_study import (
    AskedTrial,
    ask,
    hunt_summary,
    open_study,
    recover_interrupted,
    remaining_trials,
    target_trials,
    trial_seeds,
    trials_table,
)
from study.search.objectives import summary_metrics
from study.search.samplers import make_storage
from study.spec import HuntSpec
from study.tracking.mlflow_sink import HuntTracker, NullTracker, default_tracking_uri
from study.tracking.reach import check_reachable, is_server

__all__ = ["HuntOptions", "run_hunt", "trial_seeds", "trials_table"]


@dataclass(frozen=True)
class HuntOptions:
    """Where a hunt runs and writes (everything but the pipeline)."""

    out: Path
    storage: str | None = None
    tracking_uri: str | None = None
    address: str | None = None
    trials: int | None = None  # total finished trials wanted (default: the pipeline's)
    runs_per_trial: int | None = None
    num_cpus: int | None = None  # local Ray only
    progress: bool = True
    tracking: bool = True  # False: log nothing to MLflow (the tracking benchmark's baseline)


def hunt_params(spec: HuntSpec, trials: int) -> dict[str, Any]:
    """What the hunt's MLflow run records about the pipeline."""
    return {
        "pipeline": spec.source,
        "landscape": spec.landscape,
        "objective": ",".join(spec.objective),
        "sampler": spec.sampler,
        "trials": trials,
        "runs_per_trial": spec.runs_per_trial,
        "fixed": json.dumps(spec.fixed, default=str),
        "search": json.dumps([dataclasses.asdict(p) for p in spec.search], default=str),
    }


def run_hunt(
    spec: HuntSpec,
    options: HuntOptions,
    *,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Run (or resume) a hunt; returns one row per finished trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if options.runs_per_trial is not None:
        spec = dataclasses.replace(spec, runs_per_trial=options.runs_per_trial)
    out = options.out
    check_reachable(options.storage, "storage")  # a server that is not there: one line, nothing written
    check_reachable(options.tracking_uri, "tracking URI")
    storage = make_storage(options.storage, out)  # fails before anything is written for a bad URL
    (out / "trials").mkdir(parents=True, exist_ok=True)
    study = open_study(spec, storage)
    study.set_user_attr("pipeline", spec.source)
    study.set_user_attr("objectives", list(spec.objective))
    recovered = recover_interrupted(study, spec)
    remaining = remaining_trials(study, spec, options.trials)
    tracker: HuntTracker | NullTracker = (
        HuntTracker(
            options.tracking_uri or default_tracking_uri(out),
            spec.name,
            spec.name,
            # a tracking server stores artifacts itself (proxied: `mlflow server --serve-artifacts`),
            # so its UI shows them; a local store keeps them beside the hunt
            artifact_root=None if is_server(options.tracking_uri) else out / "mlartifacts",
        )
        if options.tracking
        else NullTracker()
    )
    tracker.start_hunt(hunt_params(spec, target_trials(spec, options.trials)))
    pool: ChunkPool[tuple[AskedTrial, float]] = ChunkPool.start(
        address=options.address,
        num_cpus=options.num_cpus,
        runs_per_trial=spec.runs_per_trial,
        chunk_size=spec.chunk_size,
        resources=spec.resources,
        max_inflight=spec.max_inflight,
    )
    writer = TrialWriter(study, spec, tracker, out)
    hunt_start = time.perf_counter()
    status = "FINISHED"
    try:
        _loop(spec, study, pool, writer, remaining, recovered, options.progress, on_trial)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        writer.close()  # completed trials are logged and told even when interrupted
        tracker.finish_hunt(status=status, metrics=summary_metrics(*hunt_summary(study)))
    wall = time.perf_counter() - hunt_start
    stats = {
        "wall_seconds": wall,
        "tracking_seconds": tracker.seconds,
        "runs_logged": tracker.runs_logged,
        "tracking_share": tracker.seconds / wall if wall > 0 else 0.0,
        "cluster_cpus": pool.cluster.cpus,
        "cluster_gpus": pool.cluster.gpus,
    }
    write_json(stats, out / "hunt_stats.json")
    writer.refresh_tables()
    return trials_table(study)


def _loop(
    spec: HuntSpec,
    study: optuna.Study,
    pool: ChunkPool[tuple[AskedTrial, float]],
    writer: TrialWriter,
    remaining: int,
    recovered: int,
    progress: bool,
    on_trial: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Keep the pool full, hand finished trials to the writer, report progress."""
    bar = progress_bar(
        total=remaining * spec.runs_per_trial, desc=f"hunt {spec.name}", unit="run", disable=not progress
    )
    if recovered:
        bar.write(f"resuming: {recovered} interrupted trial(s) will be re-run with their seeds")
    counterexamples = finished = 0
    to_ask = remaining

    def harvest(wait: bool) -> None:
        nonlocal counterexamples, finished
        for outcome in writer.collect(wait=wait):
            counterexamples += outcome.counterexamples
            finished += 1
            if on_trial is not None:
                on_trial(outcome.row)
        bar.set_postfix(
            trials=f"{finished}/{remaining}", logging=writer.pending, counterexamples=counterexamples
        )

    try:
        while to_ask > 0 or pool.busy:
            while to_ask > 0 and pool.has_room:
                asked = ask(study, spec)
                to_ask -= 1
                if asked is None:  # a configuration the landscape rejects: told FAIL already
                    finished += 1
                    bar.total -= spec.runs_per_trial  # none of its runs will be trained
                    bar.refresh()
                    continue
                seeds = trial_seeds(spec, asked.seed_base, spec.runs_per_trial)
                pool.submit((asked, time.perf_counter()), asked.run_spec, seeds)
            runs, done = pool.wait(timeout=5.0)
            bar.update(runs)
            for (asked, started), outcome in done:
                writer.submit(asked, outcome, started)
            harvest(wait=False)
        if writer.pending:  # every run trained; the last trials are still being logged
            bar.set_description(f"hunt {spec.name}: logging {writer.pending} trial(s)")
        writer.close()
        bar.set_description(f"hunt {spec.name}")
        harvest(wait=True)
    finally:
        bar.close()
