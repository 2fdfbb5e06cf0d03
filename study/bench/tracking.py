"""`study bench tracking`: what logging every run to MLflow costs a hunt, measured side by side.

Runs the same small teacher-student hunt (seeded random sampler: the same trials and seeds) three times
on one local Ray instance: once logging nothing, then logging every training run to a fresh SQLite
MLflow store (plus a trial run per trial and artifacts for certified counterexamples) with each run
writer of :mod:`study.tracking.writers`: ``sql`` (one transaction per batch into MLflow's tables) and
``api`` (MLflow's public ``log_batch``). A writer's cost is the difference in wall time to the hunt
without tracking, as a share of its hunt's wall time; ``tracking_seconds`` is the time the logging
thread spent writing runs. Logging runs on the driver's background thread while the workers compute,
so part of it overlaps.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from study.dispatch import ray_pool
from study.search.driver import HuntOptions, run_hunt
from study.spec import parse_pipeline


def main(*, runs: int = 64, trials: int = 8) -> int:
    spec = parse_pipeline(
        {
            "name": "bench_tracking",
            "landscape": "teacher_student",
            "search": {"k": {"type": "int", "low": 6, "high": 9}},
            "derived": {"n": "k"},
            "train": {"tol": 1.0e-9, "newton_polish": True},
            "runs_per_trial": runs,
            "chunk_size": max(1, runs // 2),
            "trials": trials,
            "sampler": "random",
        }
    )
    cluster = ray_pool.init_ray(None)
    walls = {}
    hunts = (("without tracking", False, "auto"), ("sql writer", True, "sql"), ("api writer", True, "api"))
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: start the workers and import the libraries in them
        run_hunt(spec, HuntOptions(out=Path(tmp) / "warm", trials=1, progress=False, tracking=False))
        for label, tracking, writer in hunts:
            out = Path(tmp) / label.replace(" ", "_")
            run_hunt(spec, HuntOptions(out=out, progress=False, tracking=tracking, tracking_writer=writer))
            walls[label] = json.loads((out / "hunt_stats.json").read_text())
            walls[label]["load"] = os.getloadavg()[0]  # 1-minute load average as the hunt ended
    base = walls["without tracking"]
    print(
        f"tracking benchmark: {trials} trials x {runs} runs, teacher-student k = n in 6..9, local Ray "
        f"({cluster.cpus} CPUs), SQLite MLflow store, every run logged"
    )
    print(f"hunt without tracking: {base['wall_seconds']:8.2f} s (load average {base['load']:.2f})")
    for label, _, _ in hunts[1:]:
        logged = walls[label]
        share = (logged["wall_seconds"] - base["wall_seconds"]) / logged["wall_seconds"]
        print(
            f"hunt with {label:10s}: {logged['wall_seconds']:8.2f} s (load average {logged['load']:.2f}; "
            f"{logged['runs_logged']} runs logged; "
            f"{logged['tracking_seconds']:.2f} s in the logging thread, "
            f"{1000 * logged['tracking_seconds'] / max(1, logged['runs_logged']):.1f} ms per run; "
            f"tracking share {100 * share:.1f}% of wall time)"
        )
    sql, api = walls["sql writer"], walls["api writer"]
    if sql["tracking_seconds"] > 0:
        print(f"api / sql logging-thread time: {api['tracking_seconds'] / sql['tracking_seconds']:.1f}x")
    return 0
