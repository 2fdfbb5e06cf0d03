"""`study bench tracking`: what logging every run to MLflow costs a hunt, measured side by side.

Runs the same small teacher-student hunt (seeded random sampler: the same trials and seeds) twice on
one local Ray instance: once logging nothing, once logging every training run to a fresh SQLite
MLflow store (plus a trial run per trial and artifacts for certified counterexamples). The cost is
the difference in wall time, as a share of the logged hunt's wall time. Logging runs on the driver's
background thread while the workers compute, so part of it overlaps.
"""

from __future__ import annotations

import json
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
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: start the workers and import the libraries in them
        run_hunt(spec, HuntOptions(out=Path(tmp) / "warm", trials=1, progress=False, tracking=False))
        for label, tracking in (("without tracking", False), ("with tracking", True)):
            out = Path(tmp) / label.replace(" ", "_")
            run_hunt(spec, HuntOptions(out=out, progress=False, tracking=tracking))
            walls[label] = json.loads((out / "hunt_stats.json").read_text())
    base, logged = walls["without tracking"], walls["with tracking"]
    print(
        f"tracking benchmark: {trials} trials x {runs} runs, teacher-student k = n in 6..9, local Ray "
        f"({cluster.cpus} CPUs), SQLite MLflow store, every run logged"
    )
    print(f"hunt without tracking : {base['wall_seconds']:8.2f} s")
    print(
        f"hunt with tracking    : {logged['wall_seconds']:8.2f} s ({logged['runs_logged']} runs logged; "
        f"{logged['tracking_seconds']:.2f} s in the logging thread, "
        f"{1000 * logged['tracking_seconds'] / max(1, logged['runs_logged']):.1f} ms per run)"
    )
    share = (logged["wall_seconds"] - base["wall_seconds"]) / logged["wall_seconds"]
    print(f"tracking share: {100 * share:.1f}% of wall time")
    return 0
