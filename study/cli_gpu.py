"""`study gpu-sweep`: a teacher-student sweep over k on one device without Ray, MLflow or Optuna
(a thin layer over study.bench.gpu_sweep; `make gpu-safran` runs it on CUDA)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from study.errors import UsageError


def _k_range(text: str) -> list[int]:
    """``"6:100"`` (inclusive) or ``"20,30,40"``."""
    try:
        if ":" in text:
            low, high = (int(x) for x in text.split(":"))
            ks = list(range(low, high + 1))
        else:
            ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--k must be LOW:HIGH or comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise UsageError(f"--k must name teacher sizes >= 1, got {text!r}")
    return ks


def cmd_gpu_sweep(args: argparse.Namespace) -> int:
    import torch

    from study.bench import gpu_sweep

    ks = _k_range(args.k)
    try:
        runs = gpu_sweep.runs_schedule(args.runs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    pipeline = Path(args.pipeline)
    if not pipeline.is_file():
        raise UsageError(f"pipeline: no such file {pipeline}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available")
    if not args.seconds > 0:
        raise UsageError(f"--seconds must be > 0, got {args.seconds}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty (a sweep writes a fresh folder)")
    out.mkdir(parents=True, exist_ok=True)
    print(f"study gpu-sweep: {gpu_sweep.device_summary(args.device)}; k in {ks[0]}..{ks[-1]}", flush=True)
    gpu_sweep.write_command(out, sys.argv)
    gpu_sweep.sweep(
        pipeline, ks, runs, out, device=args.device, seconds=args.seconds, log=lambda m: print(m, flush=True)
    )
    print(f"written: {out} (read with: study sweep {out}; study report {out} --no-mlflow)")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("gpu-sweep", help="teacher-student sweep over k on one device, no Ray/MLflow/Optuna")
    p.add_argument("pipeline", help="a teacher-student pipeline, e.g. pipelines/safran_2021.yaml")
    p.add_argument("--k", default="6:100", help="teacher sizes k: LOW:HIGH or a comma-separated list")
    p.add_argument("--runs", default="40:500,70:200,100", help="runs per k: BOUND:RUNS,...,RUNS")
    p.add_argument("--seconds", type=float, default=480.0, help="start no new k after this many seconds")
    p.add_argument("--device", default="cuda", help="torch device (cuda, cpu)")
    p.add_argument("--out", required=True, help="a new or empty output folder")
    p.set_defaults(func=cmd_gpu_sweep)
