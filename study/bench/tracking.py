"""`study bench tracking`: the share of a hunt's wall time spent logging every run to MLflow.

Runs a small teacher-student hunt on local Ray with a fresh SQLite MLflow store and measures, inside
the same run, the wall time the driver spends writing training runs against the hunt's wall time.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from study.search.driver import HuntOptions, run_hunt
from study.spec import parse_pipeline


def main(*, runs: int = 64, trials: int = 6) -> int:
    spec = parse_pipeline(
        {
            "name": "bench_tracking",
            "landscape": "teacher_student",
            "search": {"k": {"type": "int", "low": 5, "high": 8}},
            "derived": {"n": "k"},
            "train": {"tol": 1.0e-9, "newton_polish": True},
            "runs_per_trial": runs,
            "chunk_size": max(1, runs // 2),
            "trials": trials,
            "sampler": "random",
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "hunt"
        table = run_hunt(spec, HuntOptions(out=out, progress=False))
        stats = json.loads((out / "hunt_stats.json").read_text())
    print(
        f"tracking benchmark: {len(table)} trials x {runs} runs, teacher-student k = n in 5..8, "
        f"local Ray ({stats['cluster_cpus']} CPUs), SQLite MLflow store"
    )
    print(f"hunt wall time        : {stats['wall_seconds']:8.2f} s")
    print(
        f"logging training runs : {stats['tracking_seconds']:8.2f} s for {stats['runs_logged']} runs "
        f"({1000 * stats['tracking_seconds'] / max(1, stats['runs_logged']):.1f} ms per run)"
    )
    print(f"tracking share: {100 * stats['tracking_share']:.1f}% of wall time")
    return 0
