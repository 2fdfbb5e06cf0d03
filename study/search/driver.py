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
from study.dispatch.ray_pool import check_address
from study.progress import progress_bar
from study.record import load_runs, write_csv, write_json
from study.reports.account import hunt_account
from study.reports.summary import write_summary
from study.search.finish import TrialWriter
from study.search.hunt_study import (
    UNLIMITED,
    AskedTrial,
    ask,
    configuration_key,
    evaluated_configurations,
    finished_trials,
    open_study,
    queue_grid_point,
    recover_interrupted,
    remaining_trials,
    target_trials,
    trial_seeds,
    trials_table,
)
from study.search.identity import (
    HuntInputError,
    check_folder,
    check_locations,
    check_same_pipeline,
    hunt_lock,
    seed_scheme,
    write_identity,
)
from study.search.invocations import close_invocation, open_invocation
from study.search.objectives import counterexamples, summary_metrics
from study.search.pruning import report_steps
from study.search.samplers import grid_size, make_storage
from study.search.tables import HuntTables, Stopwatch
from study.spec import HuntSpec, PipelineError, sampler_options
from study.spec_memory import check_fits_in_memory
from study.tracking.mlflow_sink import HuntTracker, default_tracking_uri
from study.tracking.null import NullTracker
from study.tracking.reach import (
    check_artifact_location,
    check_reachable,
    check_store_url,
    existing_artifact_location,
    is_server,
)

IDENTITY_ATTR = "pipeline_identity"  # study user attr: the resolved pipeline's hash and fields

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
    tracking_writer: str = "auto"  # how runs reach MLflow: study.tracking.writers.make_writer's kind
    deadline: float | None = None  # wall-clock time (time.time()) after which no trial is started


# samplers whose proposals do not depend on the results told so far
HISTORY_FREE_SAMPLERS = frozenset({"grid", "random", "qmc"})
WRITER_POLL = 0.05  # seconds between looks at the writer while it holds the next ask back
MAX_REPEATS_IN_A_ROW = 100  # ``repeats: skip``: a sampler that only re-proposes has converged


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
        "sampler_options": json.dumps(sampler_options(spec), default=str),
        "pruner": json.dumps({"name": spec.pruner, **spec.pruner_options}, default=str),
        "repeats": spec.repeats,
        "overrides": " ".join(spec.overrides),
    }


def hunt_record(spec: HuntSpec, options: HuntOptions, trials: int) -> dict[str, Any]:
    """What ``OUT/hunt.json`` records about this invocation (read back by the hunt summary)."""
    return {
        "name": spec.name,
        "description": spec.description,
        **hunt_params(spec, trials),
        "search": [dataclasses.asdict(p) for p in spec.search],
        "derived": spec.derived,
        "fixed": spec.fixed,
        "directions": spec.directions,
        "overrides": list(spec.overrides),
        "trials": None if trials >= UNLIMITED else trials,
        "deadline": options.deadline,
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
    check_inputs(spec, options)  # nothing is written before these
    folder_identity = check_folder(spec, out)
    if options.tracking:
        check_artifacts(options.tracking_uri or default_tracking_uri(out), spec.name)
    # a storage URL given is opened first: one that does not open leaves no folder behind
    storage = make_storage(options.storage, out) if options.storage else None
    out.mkdir(parents=True, exist_ok=True)
    with hunt_lock(out):
        return _run(spec, options, storage or make_storage(None, out), folder_identity, on_trial)


def check_inputs(spec: HuntSpec, options: HuntOptions) -> None:
    """Everything a hunt can be refused for before it writes anything, each one line naming the flag or
    field (:class:`~study.errors.UsageError`, or :class:`HuntInputError`)."""
    if options.runs_per_trial is not None:
        spec = dataclasses.replace(spec, runs_per_trial=options.runs_per_trial)
    try:
        check_fits_in_memory(spec)
    except PipelineError as exc:
        raise HuntInputError(str(exc)) from None
    check_store_url(options.storage, "--storage", kind="storage")
    check_store_url(options.tracking_uri, "--tracking-uri", kind="tracking")
    check_address(options.address)  # an absent Ray head: ray.init would retry it for minutes
    check_reachable(options.storage, "storage")  # a server that is not there: one line, nothing written
    check_reachable(options.tracking_uri, "tracking URI")
    check_locations(options.out, options.storage, options.tracking_uri)


def check_artifacts(tracking_uri: str, experiment: str) -> None:
    """The experiment the hunt logs to, where it exists already, keeps artifacts where MLflow can write."""
    location = existing_artifact_location(tracking_uri, experiment)
    if location is not None:
        check_artifact_location(location, tracking_uri, "--tracking-uri")


def _run(
    spec: HuntSpec,
    options: HuntOptions,
    storage: optuna.storages.BaseStorage,
    folder_identity: dict[str, Any] | None,
    on_trial: Callable[[dict[str, Any]], None] | None,
) -> pd.DataFrame:
    out = options.out
    invoked, invoked_at = time.perf_counter(), time.time()  # this invocation's wall starts here
    stopwatch = Stopwatch()  # the account's stages, from every thread of this invocation
    study = open_study(spec, storage)
    stored = study.user_attrs.get(IDENTITY_ATTR)
    study_identity = json.loads(stored) if stored else None
    check_same_pipeline(spec, study_identity, f"study {spec.name!r}")
    seeds = seed_scheme(study_identity, folder_identity)  # the scheme the hunt began with
    identity = write_identity(spec, out, seeds=seeds)
    study.set_user_attr(IDENTITY_ATTR, json.dumps(identity))
    (out / "trials").mkdir(parents=True, exist_ok=True)
    study.set_user_attr("pipeline", spec.source)
    study.set_user_attr("objectives", list(spec.objective))
    study.set_user_attr("overrides", list(spec.overrides))
    recovered = recover_interrupted(study, spec)
    budgeted = options.deadline is not None
    remaining = remaining_trials(study, spec, options.trials, budgeted=budgeted)
    target = target_trials(spec, options.trials, budgeted=budgeted)
    record = hunt_record(spec, options, target)
    record["started"] = time.time()
    write_json(record, out / "hunt.json")
    tracker: HuntTracker | NullTracker = (
        HuntTracker(
            options.tracking_uri or default_tracking_uri(out),
            spec.name,
            spec.name,
            # a tracking server stores artifacts itself (proxied: `mlflow server --serve-artifacts`),
            # so its UI shows them; a local store keeps them beside the hunt
            artifact_root=None if is_server(options.tracking_uri) else out / "mlartifacts",
            writer=options.tracking_writer,
        )
        if options.tracking
        else NullTracker()
    )
    tracker.start_hunt({**hunt_params(spec, target), "pipeline_hash": identity["hash"]})
    pool: ChunkPool[tuple[AskedTrial, float]] = ChunkPool.start(
        address=options.address,
        num_cpus=options.num_cpus,
        runs_per_trial=spec.runs_per_trial,
        chunk_size=spec.chunk_size,
        resources=spec.resources,
        max_inflight=spec.max_inflight,
        timer=stopwatch.add,
    )
    tables = HuntTables(out, lambda: trials_table(study))
    tables.rebuild()  # once: a resumed hunt's tables from its files; later trials are appended
    writer = TrialWriter(study, spec, tracker, out, tables, verify=pool.verify, stopwatch=stopwatch)
    invocations = open_invocation(out, started=invoked_at)
    hunt_start = time.perf_counter()
    stopwatch.add("start_finish", hunt_start - invoked)
    status = "FINISHED"
    stop = "interrupted"
    try:
        stop = _loop(spec, study, pool, writer, remaining, recovered, options, on_trial, seeds)
        if spec.sampler == "grid" and len(finished_trials(study)) >= grid_size(spec):
            stop = "grid exhausted"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        looped = time.perf_counter()  # the rest of this invocation is its finish
        writer.close()  # completed trials are logged and told even when interrupted
        tables.finish()  # the tables a rebuild from the trial files would make
        # counted from the trial files, whose labels are final (a trial's own summary is as it was told)
        runs = load_runs(out)
        found = len(counterexamples(runs)) if len(runs) else 0
        tracker.finish_hunt(status=status, metrics=summary_metrics(len(runs), found))
        write_json({**record, "finished": time.time(), "status": status, "stopped": stop}, out / "hunt.json")
        write_csv(writer.stopwatch.frame(), out / "driver_timing.csv")
        stopwatch.add("start_finish", time.perf_counter() - looped)
        # one wall, from the start of this invocation, for its entry and the account: both written here,
        # so a driver stopped by an exception or Ctrl-C is in both
        wall = time.perf_counter() - invoked
        stats = {
            "wall_seconds": wall,
            "tracking_seconds": tracker.seconds,
            "runs_logged": tracker.runs_logged,
            "tracking_share": tracker.seconds / wall if wall > 0 else 0.0,
            "cluster_cpus": pool.cluster.cpus,
            "cluster_gpus": pool.cluster.gpus,
            **close_invocation(invocations, wall),  # this run's wall above; the hunt's over its invocations
            "account": hunt_account(out, stopwatch.stages, wall, pool.cluster.cpus),
        }
        write_json(stats, out / "hunt_stats.json")
        write_summary(out)  # reads the invocations just written
    return trials_table(study)


def _loop(
    spec: HuntSpec,
    study: optuna.Study,
    pool: ChunkPool[tuple[AskedTrial, float]],
    writer: TrialWriter,
    remaining: int,
    recovered: int,
    options: HuntOptions,
    on_trial: Callable[[dict[str, Any]], None] | None,
    scheme: str,
) -> str:
    """Keep the pool full until the trials or the time budget are spent, prune hopeless trials after
    each chunk (reported at fixed steps: :mod:`study.search.pruning`), hand finished trials to the
    writer, report progress. Returns why it stopped."""
    deadline = options.deadline
    bar = progress_bar(
        total=None if remaining >= UNLIMITED else remaining * spec.runs_per_trial,
        desc=f"hunt {spec.name}",
        unit="run",
        disable=not options.progress,
    )
    if recovered:
        bar.write(f"resuming: {recovered} interrupted trial(s) will be re-run with their seeds")
    counterexamples = finished = 0
    to_ask = remaining
    stop = "trials done"
    repeats_in_a_row = 0
    pruning = spec.pruner not in ("none", "nop", "off")
    previous_of: dict[int, list[int]] = {}  # trial number -> earlier trials of its configuration
    reported: dict[int, int] = {}  # trial number -> the last step it reported (search.pruning)
    # configuration -> trials that trained it: finished before this driver began, or asked by it (maybe
    # not told yet)
    evaluated = evaluated_configurations(study)

    learns = spec.sampler.lower().replace("_", "").removesuffix("sampler") not in HISTORY_FREE_SAMPLERS

    def room() -> bool:
        """A model-based sampler counts trials finished but not yet told as in flight, so that it
        proposes from every result it could have (the writer tells them on its own thread). A
        history-free sampler lets the writer fall at most ``max_inflight`` trials behind: workers
        faster than the writer would otherwise grow its queue, and every trial's wait in it, for as
        long as the hunt lasts (``study bench soak``)."""
        untold = writer.pending if learns else max(0, writer.pending - pool.max_inflight)
        return pool.in_flight + untold < pool.max_inflight

    ask_seconds = 0.0  # the longest ask so far: a trial asked later would start after the deadline

    def out_of_time(margin: float = 0.0) -> bool:
        return deadline is not None and time.time() + margin >= deadline

    def harvest(wait: bool) -> None:
        nonlocal counterexamples, finished
        for outcome in writer.collect(wait=wait):
            counterexamples += outcome.counterexamples
            finished += 1
            if on_trial is not None:
                on_trial(outcome.row)
        shown = "" if remaining >= UNLIMITED else f"/{remaining}"
        bar.set_postfix(trials=f"{finished}{shown}", logging=writer.pending, counterexamples=counterexamples)

    try:
        while (to_ask > 0 and not out_of_time()) or pool.busy:
            while to_ask > 0 and room() and not out_of_time(ask_seconds):
                asking = time.time()
                with writer.stopwatch.timed("optuna"):
                    if spec.sampler == "grid" and not queue_grid_point(study, spec):
                        to_ask, stop = 0, "grid exhausted"
                        break
                    asked = ask(study, spec, on_reject=writer.rejected)
                ask_seconds = max(ask_seconds, time.time() - asking)
                to_ask -= 1
                if asked is None:  # a configuration the landscape rejects: told FAIL already
                    finished += 1
                    if bar.total is not None:
                        bar.total -= spec.runs_per_trial  # none of its runs will be trained
                        bar.refresh()
                    continue
                config = configuration_key(asked.values)
                previous = sorted(set(evaluated.get(config, [])) - {asked.trial.number})
                if previous and spec.repeats == "skip":
                    writer.skip(asked, previous)
                    repeats_in_a_row += 1
                    if repeats_in_a_row >= MAX_REPEATS_IN_A_ROW:
                        to_ask, stop = 0, f"{MAX_REPEATS_IN_A_ROW} repeated configurations in a row"
                    continue
                repeats_in_a_row = 0
                previous_of[asked.trial.number] = previous
                evaluated.setdefault(config, []).append(asked.trial.number)
                seeds = trial_seeds(spec, asked.seed_base, spec.runs_per_trial, scheme=scheme)
                pool.submit((asked, time.perf_counter()), asked.run_spec, seeds)
            if not pool.busy and writer.pending and to_ask > 0:
                harvest(wait=True)  # nothing trains: let the sampler see the trials being told
                continue
            wait = 5.0 if deadline is None else max(0.05, min(5.0, deadline - time.time()))
            if to_ask > 0 and writer.pending and pool.in_flight < pool.max_inflight:
                wait = min(wait, WRITER_POLL)  # the writer, not the workers, holds the next ask back
            waited = pool.wait(timeout=wait)
            bar.update(waited.runs)
            for key, outcome in waited.finished:
                asked, started = key
                reported_at = reported.pop(asked.trial.number, 0)
                if pruning and not isinstance(outcome, BaseException):  # every step, for later trials
                    report_steps(spec, asked, outcome, reported_at)
                writer.submit(asked, outcome, started, previous=previous_of.pop(asked.trial.number, []))
            if pruning:
                for key, prefix in waited.progressed:
                    asked, started = key
                    before = reported.get(asked.trial.number, 0)
                    reported[asked.trial.number] = report_steps(spec, asked, prefix, before)
                    if reported[asked.trial.number] > before and asked.trial.should_prune():
                        ran = pool.cancel(key)
                        writer.submit(asked, ran, started, pruned=True, previous=[])
                        previous_of.pop(asked.trial.number, None)
                        reported.pop(asked.trial.number, None)
            harvest(wait=False)
        if to_ask > 0 and out_of_time():
            stop = "time budget spent"
        if writer.pending:  # every run trained; the last trials are still being logged
            bar.set_description(f"hunt {spec.name}: logging {writer.pending} trial(s)")
        writer.close()
        bar.set_description(f"hunt {spec.name}")
        harvest(wait=True)
    finally:
        bar.close()
    return stop
