"""`study bench soak`: does the driver's work per trial grow as a hunt grows?

A real hunt (local Ray, an Optuna SQLite storage, an MLflow SQLite store) of N cheap trials: a
teacher-student k = n = 2 configuration, a few runs per trial and few steps, the learning rate drawn by
a seeded sampler (random by default), so that every trial is a configuration of its own. The writer
times each trial from its results arriving at the driver to its tell and tables done
(``OUT/driver_timing.csv``, written by :mod:`study.search.finish`), split into the wait for the
writer's thread to finish earlier trials and the driver's own work on the trial (files, MLflow, tell,
tables). The benchmark prints the medians of
the first and of the last 100 trials of each, the driver's resident memory after the first 100 trials
and at the end, its peak, the hunt's account (:mod:`study.reports.account`), the ratio of the two
medians of the driver's own work, and as its last line the ratio end to end (results arrived -> told
and tables done, the wait in the writer's queue included), ``growth: X.XXx``: a writer that does not
keep up with the workers shows there. ``sampler``: random (history-free) or tpe (the driver waits for
the writer before it asks).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from study.dispatch import ray_pool
from study.reports.account import account_lines
from study.search.driver import HuntOptions, run_hunt
from study.spec import HuntSpec, parse_pipeline

WINDOW = 100  # trials per median (fewer in a hunt of under 200 trials: half of it each)


def soak_spec(trials: int, runs: int, max_steps: int, sampler: str = "random") -> HuntSpec:
    return parse_pipeline(
        {
            "name": "bench_soak",
            "landscape": "teacher_student",
            "fixed": {"k": 2, "n": 2},
            "search": {"lr": {"type": "float", "low": 0.05, "high": 0.2}},
            "train": {"tol": 1.0e-6, "max_steps": max_steps},
            "runs_per_trial": runs,
            "chunk_size": runs,
            "trials": trials,
            "sampler": sampler,
        }
    )


def resident_mib() -> float:
    """The driver's resident memory now (VmRSS), in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def medians(seconds: list[float], window: int = WINDOW) -> tuple[int, float, float]:
    """(trials per median, median of the first ones, of the last ones) of per-trial times in finish
    order."""
    n = min(window, max(1, len(seconds) // 2))
    return n, statistics.median(seconds[:n]), statistics.median(seconds[-n:])


def median_line(label: str, seconds: list[float]) -> str:
    n, first, last = medians(seconds)
    return f"{label}: median of the first {n} trials {1000 * first:.1f} ms, last {n} {1000 * last:.1f} ms"


def main(
    *,
    trials: int = 3000,
    runs: int = 2,
    max_steps: int = 200,
    num_cpus: int | None = None,
    sampler: str = "random",
) -> int:
    spec = soak_spec(trials, runs, max_steps, sampler)
    cluster = ray_pool.init_ray(None, num_cpus=num_cpus)
    memory: dict[str, float] = {}
    done = 0

    def on_trial(_: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if done == min(WINDOW, trials):
            memory["early"] = resident_mib()

    with tempfile.TemporaryDirectory(prefix="mh-soak-") as tmp:
        out = Path(tmp) / "hunt"
        start = time.perf_counter()
        run_hunt(spec, HuntOptions(out=out, progress=False), on_trial=on_trial)
        wall = time.perf_counter() - start
        timing = pd.read_csv(out / "driver_timing.csv")
        account = json.loads((out / "hunt_stats.json").read_text())["account"]
    memory["end"] = resident_mib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    seconds = [float(s) for s in timing["seconds"]]
    _, first, last = medians(seconds)
    _, work_first, work_last = medians([float(s) for s in timing["work"]])
    load = os.getloadavg()
    print(
        f"soak benchmark: {len(seconds)} trials x {runs} runs, teacher-student k = n = 2 "
        f"(max_steps {max_steps}), sampler {sampler}, local Ray ({cluster.cpus} CPUs), Optuna SQLite, "
        "MLflow SQLite"
    )
    print(f"hunt wall time {wall:.1f} s ({len(seconds) / wall:.2f} trials/s); load average {load[0]:.2f}")
    print(median_line("per trial, results arrived -> told and tables done", seconds))
    print(median_line("  of it waiting for the writer's thread", [float(s) for s in timing["queued"]]))
    print(median_line("  of it the driver's own work", [float(s) for s in timing["work"]]))
    print(median_line("    of that the tables", [float(s) for s in timing["tables"]]))
    print(
        f"driver resident memory: {memory.get('early', float('nan')):.0f} MiB after trial "
        f"{min(WINDOW, trials)}, {memory['end']:.0f} MiB at the end; peak RSS {peak:.0f} MiB"
    )
    print("\n".join(account_lines(account)))
    print(f"growth of the driver's own work: {_ratio(work_last, work_first):.2f}x")
    print(f"growth: {_ratio(last, first):.2f}x")
    return 0


def _ratio(last: float, first: float) -> float:
    return last / first if first > 0 else float("nan")
