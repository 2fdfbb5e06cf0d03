"""The ask-and-tell hunt driver: Optuna proposes trials, Ray runs their chunks, MLflow records every run.

The study lives in persistent storage; running the same hunt again resumes it: finished trials are
kept, trials left running by an interrupted driver are told FAIL and re-run with the same seeds.
Only this driver writes to the storages.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from study.diagnostics.critical import CLASSES
from study.dispatch import ray_pool
from study.progress import progress_bar
from study.runs import RunBatch, RunSpec
from study.search.objectives import objective_value, trial_summary
from study.search.samplers import enqueue_grid, grid_size, make_sampler, make_storage, suggest
from study.spec import HuntSpec
from study.tracking.mlflow_sink import HuntTracker, NullTracker, default_tracking_uri

optuna.logging.set_verbosity(optuna.logging.WARNING)


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


@dataclass
class _InFlight:
    trial: optuna.trial.Trial
    values: dict[str, Any]
    run_spec: RunSpec
    seed_base: int
    refs: list[Any]
    done: list[Any] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)


def trial_seeds(spec: HuntSpec, seed_base: int, runs: int) -> list[int]:
    """Seeds of a trial's runs: a pure function of (hunt seed, seed base, replica index)."""
    return [spec.seed * 1_000_000_000 + seed_base * 100_000 + i for i in range(runs)]


def _recover_interrupted(study: optuna.Study) -> int:
    """Tell FAIL to trials an interrupted driver left RUNNING and enqueue them again (same seeds)."""
    count = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        seed_base = t.user_attrs.get("seed_base", t.number)
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "interrupted; re-run")
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"seed_base": seed_base})
        count += 1
    return count


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    trials = study.get_trials(deepcopy=False, states=done)
    # a trial failed by an interruption is re-run: it does not count as finished
    return [t for t in trials if t.user_attrs.get("fail_reason") != "interrupted; re-run"]


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:2000]


def run_hunt(
    spec: HuntSpec,
    options: HuntOptions,
    *,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Run (or resume) a hunt; returns one row per finished trial."""
    if options.runs_per_trial is not None:
        spec = dataclasses.replace(spec, runs_per_trial=options.runs_per_trial)
    out = options.out
    storage = make_storage(options.storage, out)  # fails before anything is written for a bad URL
    (out / "trials").mkdir(parents=True, exist_ok=True)
    tracking_uri = options.tracking_uri or default_tracking_uri(out)
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=make_sampler(spec),
        directions=spec.directions,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    study.set_user_attr("pipeline", spec.source)
    study.set_user_attr("objectives", list(spec.objective))
    recovered = _recover_interrupted(study)
    if spec.sampler == "grid":
        enqueue_grid(study, spec)

    target = options.trials if options.trials is not None else spec.trials
    if spec.sampler == "grid":
        target = min(target, grid_size(spec))
    remaining = max(0, target - len(_finished(study)))

    tracker: HuntTracker | NullTracker = (
        HuntTracker(tracking_uri, spec.name, spec.name, artifact_root=out / "mlartifacts")
        if options.tracking
        else NullTracker()
    )
    tracker.start_hunt(
        {
            "pipeline": spec.source,
            "landscape": spec.landscape,
            "objective": ",".join(spec.objective),
            "sampler": spec.sampler,
            "trials": target,
            "runs_per_trial": spec.runs_per_trial,
            "fixed": json.dumps(spec.fixed, default=str),
            "search": json.dumps([dataclasses.asdict(p) for p in spec.search], default=str),
        }
    )
    cluster = ray_pool.init_ray(options.address, num_cpus=options.num_cpus)
    hunt_start = time.perf_counter()
    use_gpu = cluster.gpus > 0
    chunks_per_trial = math.ceil(spec.runs_per_trial / spec.chunk_size)
    max_inflight = spec.max_inflight or max(2, math.ceil(cluster.cpus / chunks_per_trial) + 1)

    bar = progress_bar(
        total=remaining * spec.runs_per_trial,
        desc=f"hunt {spec.name}",
        unit="run",
        disable=not options.progress,
    )
    counterexamples = 0
    finished_now = 0
    pending: dict[Any, _InFlight] = {}  # ray ref -> its trial
    inflight: list[_InFlight] = []
    to_ask = remaining
    if recovered:
        bar.write(f"resuming: {recovered} interrupted trial(s) will be re-run with their seeds")
    status = "FINISHED"
    # Finished trials are logged and told on one background thread, in order, while the workers
    # compute the next ones; a trial is told to Optuna only after its runs are in MLflow.
    finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish-trial")
    finishing: list[Future[tuple[int, dict[str, Any]]]] = []

    def harvest(wait: bool) -> None:
        nonlocal counterexamples, finished_now
        for future in [f for f in finishing if wait or f.done()]:
            finishing.remove(future)
            found, row = future.result()
            counterexamples += found
            finished_now += 1
            if on_trial is not None:
                on_trial(row)

    try:
        while to_ask > 0 or inflight:
            while to_ask > 0 and len(inflight) < max_inflight:
                item = _ask(study, spec, tracker)
                to_ask -= 1
                if item is None:
                    finished_now += 1
                    bar.update(spec.runs_per_trial)
                    continue
                seeds = trial_seeds(spec, item.seed_base, spec.runs_per_trial)
                for start in range(0, len(seeds), spec.chunk_size):
                    ref = ray_pool.submit_chunk(
                        item.run_spec,
                        seeds[start : start + spec.chunk_size],
                        gpu_fraction=spec.gpu_fraction,
                        use_gpu=use_gpu,
                    )
                    item.refs.append(ref)
                    pending[ref] = item
                inflight.append(item)
            if not pending:
                continue
            ready, _ = ray_pool.ray.wait(list(pending), num_returns=1, timeout=5.0)
            for ref in ready:
                item = pending.pop(ref)
                item.done.append(ref)
                bar.update(min(spec.chunk_size, spec.runs_per_trial))
                if len(item.done) == len(item.refs):
                    inflight.remove(item)
                    outcome = _gather(item)
                    finishing.append(finisher.submit(_complete, study, spec, tracker, item, out, outcome))
            harvest(wait=False)
            bar.set_postfix(trials=f"{finished_now}/{remaining}", counterexamples=counterexamples)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        finisher.shutdown(wait=True)  # completed trials are logged and told even when interrupted
        if status == "FINISHED":
            harvest(wait=True)
            bar.set_postfix(trials=f"{finished_now}/{remaining}", counterexamples=counterexamples)
        bar.close()
        tracker.finish_hunt(status=status)
    wall = time.perf_counter() - hunt_start
    stats = {
        "wall_seconds": wall,
        "tracking_seconds": tracker.seconds,
        "runs_logged": tracker.runs_logged,
        "tracking_share": tracker.seconds / wall if wall > 0 else 0.0,
        "cluster_cpus": cluster.cpus,
        "cluster_gpus": cluster.gpus,
    }
    (out / "hunt_stats.json").write_text(json.dumps(stats, indent=2))
    table = trials_table(study)
    table.to_csv(out / "trials.csv", index=False)
    collect_runs(out)
    return table


def _ask(study: optuna.Study, spec: HuntSpec, tracker: HuntTracker | NullTracker) -> _InFlight | None:
    trial = study.ask()
    values: dict[str, Any] = {p.name: suggest(trial, p) for p in spec.search}
    seed_base = int(trial.user_attrs.get("seed_base", trial.number))
    trial.set_user_attr("seed_base", seed_base)
    try:
        resolved = spec.resolve(values)
        run_spec = spec.run_spec(resolved)
        from study.landscapes.registry import landscape_config

        landscape_config(run_spec.landscape, run_spec.params)
    except ValueError as exc:
        trial.set_user_attr("fail_reason", str(exc))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None
    trial.set_user_attr("values", json.dumps(resolved, default=str))
    item = _InFlight(trial=trial, values=resolved, run_spec=run_spec, seed_base=seed_base, refs=[])
    return item


def _gather(item: _InFlight) -> list[RunBatch] | BaseException:
    """A finished trial's chunk results, or the exception of the first chunk that failed."""
    try:
        return [ray_pool.ray.get(ref) for ref in item.refs]
    except Exception as exc:  # a failed chunk fails the trial, not the hunt
        return exc


def _complete(
    study: optuna.Study,
    spec: HuntSpec,
    tracker: HuntTracker | NullTracker,
    item: _InFlight,
    out: Path,
    outcome: list[RunBatch] | BaseException,
) -> tuple[int, dict[str, Any]]:
    """Log a trial's runs, write its files, tell Optuna. Returns (certified spurious found, row)."""
    trial = item.trial
    run_id = tracker.trial_run(item.seed_base, trial.number, item.values)
    if isinstance(outcome, BaseException):
        reason = _error_line(outcome)
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        tracker.finish_trial(run_id, metrics={}, failed=reason)
        return 0, {"number": trial.number, "state": "FAIL", "fail_reason": reason}
    batch = RunBatch.concat(outcome)
    frame = batch.frame
    frame.insert(0, "trial", trial.number)
    frame.insert(1, "seed_base", item.seed_base)
    for key, value in item.values.items():
        frame[f"param_{key}"] = str(value) if isinstance(value, tuple | list) else value
    name = f"trial-{item.seed_base:05d}"
    frame.to_csv(out / "trials" / f"{name}.csv", index=False)
    np.savez_compressed(
        out / "trials" / f"{name}.npz",
        theta=batch.theta,
        theta0=batch.theta0,
        eigenvalues=batch.eigenvalues,
        curve=batch.curve,
        curve_steps=batch.curve_steps,
        seed=frame["seed"].to_numpy(),
    )
    tracker.log_runs(
        run_id,
        batch,
        seed_base=item.seed_base,
        trial_number=trial.number,
        values=item.values,
        config=item.run_spec.flat_config(),
    )
    values = [objective_value(o, frame, item.values) for o in spec.objective]
    summary = trial_summary(frame)
    trial.set_user_attr("summary", json.dumps(summary))
    trial.set_user_attr("seconds", time.perf_counter() - item.started)
    study.tell(trial, values)
    metrics = {f"objective_{o}": v for o, v in zip(spec.objective, values, strict=True)}
    metrics.update({f"count_{k}": float(v) for k, v in summary["counts"].items()})
    metrics["certified_spurious"] = float(summary["certified_spurious"])
    tracker.finish_trial(run_id, metrics=metrics)
    row = {"number": trial.number, "state": "COMPLETE", **item.values, **summary}
    return int(summary["certified_spurious"]), row


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, parameters, objective values and the class counts."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("fail_reason") == "interrupted; re-run" or not t.state.is_finished():
            continue  # replaced by a re-run, or still to come (queued grid points)
        summary = json.loads(t.user_attrs.get("summary", "{}"))
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name, **t.params}
        for i, v in enumerate(t.values or []):
            row[f"value_{i}"] = v
        row["runs"] = summary.get("runs", 0)
        for cls, count in summary.get("counts", {}).items():
            row[cls] = count
        row["certified_spurious"] = summary.get("certified_spurious", 0)
        row["lowest_spurious_loss"] = summary.get("lowest_spurious_loss")
        if t.state == optuna.trial.TrialState.FAIL:
            row["fail_reason"] = t.user_attrs.get("fail_reason", "")
        rows.append(row)
    table = pd.DataFrame(rows)
    present = [c for c in CLASSES if c in table.columns]
    if present:  # class counts in a fixed order, 0 where a trial had none
        table[present] = table[present].fillna(0).astype(int)
        rest = [c for c in table.columns if c not in present]
        at = rest.index("runs") + 1 if "runs" in rest else len(rest)
        table = table[rest[:at] + present + rest[at:]]
    return table


def collect_runs(out: Path) -> pd.DataFrame:
    """Concatenate the per-trial CSVs into ``out/runs.csv`` (one row per training run)."""
    files = sorted((out / "trials").glob("trial-*.csv"))
    frame = pd.concat([pd.read_csv(f) for f in files], ignore_index=True) if files else pd.DataFrame()
    frame.to_csv(out / "runs.csv", index=False)
    return frame
