"""`study bench gpu-grid`: the published Safran-Shamir grid (45 cells) trained and certified on one GPU.

The lent GPU image has torch, numpy, scipy, pandas and pyyaml but no Ray, MLflow or Optuna, so this
bypasses the hunt: each cell (k = 6..20, n = k, k+1, k+2) of ``pipelines/safran_shamir_2018.yaml`` is
one call of :func:`study.runs.run_replicas` (training by ``engine``: "auto" picks the landscape's
kernel for the device where it has one, else the batched torch loop; then classification and
certificates) with ``runs`` seeds on the device. Prints the device, each cell's spurious count and
seconds, the total, and the projection to the published 1000 runs per cell. The Ray path with
``resources.device: cuda`` is covered by the CPU-side tests of the hunt.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml

from study.diagnostics.critical import DiagnosticsConfig
from study.record import CriticalPoint
from study.runs import RunSpec, run_replicas
from study.training.gd import TrainConfig

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "safran_shamir_2018.yaml"


def cells() -> list[tuple[int, int]]:
    """(k, n) of the published grid: k = 6..20, n - k in 0, 1, 2."""
    return [(k, k + excess) for k in range(6, 21) for excess in (0, 1, 2)]


def main(*, runs: int = 100, device: str = "cuda", ks: list[int] | None = None, engine: str = "auto") -> int:
    raw = yaml.safe_load(PIPELINE.read_text())
    train = TrainConfig(**{**raw["train"], "engine": engine})
    diagnostics = DiagnosticsConfig(**raw.get("diagnostics", {}))
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"gpu grid: {PIPELINE.name} on {name}, {runs} runs per cell, train {train}")
    total = 0.0
    chosen = [(k, n) for k, n in cells() if ks is None or k in ks]
    for k, n in chosen:
        spec = RunSpec(
            "teacher_student",
            {"k": k, "n": n, "teacher": "identity"},
            init_scheme=raw.get("init_scheme", "xavier-normal"),
            train=train,
            diagnostics=diagnostics,
        )
        start = time.perf_counter()
        batch = run_replicas(spec, list(range(runs)), device=dev)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
        total += seconds
        classes = batch.frame["critical_point"]
        spurious = int((classes == CriticalPoint.SPURIOUS_MINIMUM).sum())
        print(f"k={k:>2} n={n:>2}: {spurious:>4}/{runs} spurious, {seconds:7.1f} s", flush=True)
    print(f"total: {total:.1f} s for {len(chosen)} cells x {runs} runs")
    print(f"projected to 1000 runs per cell: {total * 1000 / runs / 60:.1f} min")
    return 0
