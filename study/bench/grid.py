"""`study bench grid`: the published Safran-Shamir grid (45 cells) at R runs per cell through the real hunt.

Runs ``pipelines/safran_shamir_2018.yaml`` with ``runs_per_trial = R``: Optuna's grid sampler, Ray
workers on this machine, every run classified and certified and logged to a fresh MLflow store. Prints
the projection to the published 1000 runs per cell, wall x 1000 / R (fixed costs such as starting Ray
are scaled too, so the projection errs high), the hunt's account (:mod:`study.reports.account`: core-
seconds per stage, the busy fraction of Ray's CPUs) and, as its last line, ``wall: S s``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from study.reports.account import account_lines
from study.search.driver import HuntOptions, run_hunt
from study.spec import load_pipeline

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "safran_shamir_2018.yaml"
PUBLISHED_RUNS = 1000


def main(*, runs: int = 20, out: str | None = None, num_cpus: int | None = None) -> int:
    spec = load_pipeline(PIPELINE)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out) if out else Path(tmp) / "grid"
        start = time.perf_counter()
        trials = run_hunt(
            spec, HuntOptions(out=folder, runs_per_trial=runs, num_cpus=num_cpus, progress=False)
        )
        wall = time.perf_counter() - start
        stats = json.loads((folder / "hunt_stats.json").read_text())
    cells = len(trials)
    print(
        f"grid benchmark: {PIPELINE.name}, {cells} cells x {runs} runs = {cells * runs} runs "
        f"(Ray {stats['cluster_cpus']} CPUs, MLflow, certification)"
    )
    projected = wall * PUBLISHED_RUNS / runs
    print(f"projected to {PUBLISHED_RUNS} runs per cell: {projected / 60:.1f} min")
    print(f"logging thread: {stats['tracking_seconds']:.1f} s")
    print()
    print("\n".join(account_lines(stats["account"])))
    print(f"wall: {wall:.1f} s")
    return 0
