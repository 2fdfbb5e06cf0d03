"""The `study` command: a thin layer over the library (no logic lives here)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from study.errors import UsageError
from study.telemetry import telemetry_off


def _fail(message: str) -> int:
    print(f"study: error: {message}", file=sys.stderr)
    return 2


# ---- certify ------------------------------------------------------------------------------------------
def cmd_certify(args: argparse.Namespace) -> int:
    import numpy as np

    from study.certify import certify_weights

    path = Path(args.weights)
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    try:
        W = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a malformed file
        raise UsageError(f"cannot read {path} as a .npy array: {exc}") from None
    try:
        row = certify_weights(W, k=args.k, d=args.d)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(_finite_or_null(row), default=_json_default, allow_nan=False))
    else:
        width = max(len(key) for key in row)
        for key, value in row.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _finite_or_null(row: dict[str, object]) -> dict[str, object]:
    """NaN and infinities as JSON null (bare NaN is not JSON)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _json_default(value: object) -> object:
    if hasattr(value, "item"):
        return value.item()  # type: ignore[attr-defined]
    return str(value)


# ---- train ---------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from study.progress import progress_bar
    from study.runs import RunSpec, class_summary, run_replicas
    from study.training.gd import TrainConfig

    if args.runs < 1:
        raise UsageError(f"--runs must be >= 1, got {args.runs}")
    params = {"k": args.k, "n": args.n} | ({"d": args.d} if args.d is not None else {})
    try:
        spec = RunSpec(
            "teacher_student",
            params,
            train=TrainConfig(lr=args.lr, tol=args.tol, max_steps=args.max_steps, newton_polish=args.newton),
            init_scheme=args.init,
            init_scale=args.init_scale,
            dtype=args.dtype,
        )
        spec.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    seeds = list(range(args.seed, args.seed + args.runs))
    device = torch.device(args.device)
    with progress_bar(total=args.runs, desc=f"k={args.k} n={args.n}", unit="run") as bar:
        batches = []
        for start in range(0, len(seeds), args.chunk):
            chunk = seeds[start : start + args.chunk]

            def report(n_done: int, _total: int, offset: int = start) -> None:
                bar.update_to(offset + n_done)

            batches.append(run_replicas(spec, chunk, device=device, progress=report))
    from study.record import RunBatch

    batch = RunBatch.concat(batches)
    counts, levels = class_summary(batch.frame)
    print(
        f"\n{len(seeds)} runs of teacher-student k={args.k} n={args.n} d={args.d or args.k}"
        f" (seeds {seeds[0]}..{seeds[-1]}, {args.dtype}, {device})"
    )
    print("\nruns per class:")
    print(counts.to_string())
    print("\ncertified:", int(batch.frame["certified"].sum()), "of", len(seeds))
    if len(levels):
        print("\ndistinct spurious loss values:")
        print(levels.to_string(index=False))
    else:
        print("\nno spurious minima")
    if args.out:
        from study.record import write_run_batch

        out = write_run_batch(batch, Path(args.out), config=spec.flat_config(), landscape=spec.landscape)
        print(f"\nwrote {out}")
    return 0


# ---- bench ---------------------------------------------------------------------------------------------
def _int_list(text: str, field: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{field} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"{field} must be comma-separated integers >= 1, got {text!r}")
    return values


def cmd_bench(args: argparse.Namespace) -> int:
    if args.runs is not None and args.runs < 1:
        raise UsageError(f"--runs must be >= 1, got {args.runs}")
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.what == "trainer":
        import torch

        from study.bench import trainer as bench_trainer
        from study.training.protocol import ENGINES as TRAIN_ENGINES

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {args.device}: no CUDA device is available")
        if args.anchor_runs < 1:
            raise UsageError(f"--anchor-runs must be >= 1, got {args.anchor_runs}")
        engines = [e.strip() for e in (args.engines or ",".join(bench_trainer.DEFAULT_ENGINES)).split(",")]
        if any(bench_trainer.engine_config(e) is None for e in engines):
            names = ", ".join(e for e in TRAIN_ENGINES if e != "auto")
            raise UsageError(
                f"--engines must name engines ({names}), each alone (with the Newton finish) or followed "
                f"by ' plain', got {args.engines!r}"
            )
        if args.blocks < 1:
            raise UsageError(f"--blocks must be >= 1, got {args.blocks}")
        return bench_trainer.main(
            ks=_int_list(args.k or "8,13,20", "--k"),
            runs=args.runs or 1000,
            anchor_runs=args.anchor_runs,
            blocks=args.blocks,
            device=args.device,
            threads=args.threads,
            engines=engines,
        )
    if args.what == "agreement":
        from study.bench import agreement as bench_agreement

        if not args.switch_at > 0:
            raise UsageError(f"--switch-at must be > 0, got {args.switch_at}")
        return bench_agreement.main(
            ks=_int_list(args.k or "8,13,20", "--k"),
            excess=[int(x) for x in args.excess.split(",") if x.strip()],
            seeds=args.runs or 500,
            switch_at=args.switch_at,
            threads=args.threads,
        )
    if args.what == "grid":
        from study.bench import grid as bench_grid

        return bench_grid.main(runs=args.runs or 20, out=args.out, num_cpus=args.cpus)
    if args.what == "gpu-grid":
        from study.bench import gpu_grid
        from study.training.protocol import ENGINES as TRAIN_ENGINES

        engine = args.engines or "auto"
        if engine not in TRAIN_ENGINES:
            raise UsageError(
                f"--engines must name one engine ({', '.join(TRAIN_ENGINES)}) for gpu-grid, got {engine!r}"
            )
        return gpu_grid.main(
            runs=args.runs or 100,
            device=args.device,
            ks=None if args.k is None else _int_list(args.k, "--k"),
            engine=engine,
        )
    if args.what == "tracking":
        from study.bench import tracking as bench_tracking

        return bench_tracking.main(runs=args.runs or 1000)
    if args.what == "soak":
        from study.bench import soak as bench_soak

        if args.trials is not None and args.trials < 2:
            raise UsageError(f"--trials must be >= 2, got {args.trials}")
        if args.cpus is not None and args.cpus < 1:
            raise UsageError(f"--cpus must be >= 1, got {args.cpus}")
        if args.sampler not in ("random", "tpe"):
            raise UsageError(f"--sampler must be random or tpe, got {args.sampler!r}")
        return bench_soak.main(
            trials=args.trials or 3000, runs=args.runs or 2, num_cpus=args.cpus, sampler=args.sampler
        )
    raise UsageError(f"unknown benchmark {args.what!r}")


def _add_hunt_commands(sub: argparse._SubParsersAction) -> None:
    """Commands that live in their own modules: hunt, report, submit/jobs/logs."""
    import importlib

    for module in ("study.cli_hunt", "study.cli_report", "study.cli_cluster", "study.cli_gpu"):
        try:
            add = importlib.import_module(module).add_commands
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        add(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description="minima-hunt: loss-landscape studies")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("certify", help="classify and certify a teacher-student end point")
    p.add_argument("weights", help="an (n, d) .npy array of student neurons")
    p.add_argument("--k", type=int, required=True, help="teacher size (teacher = I_k)")
    p.add_argument("--d", type=int, default=None, help="input dimension (default k)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser("train", help="train R teacher-student runs and summarize their end points")
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--d", type=int, default=None)
    p.add_argument("--runs", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write runs.csv and arrays.npz here")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--tol", type=float, default=1e-9)
    p.add_argument("--max-steps", type=int, default=200_000)
    p.add_argument("--init", default="xavier-normal")
    p.add_argument("--init-scale", type=float, default=1.0)
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk", type=int, default=256, help="replicas per batched chunk")
    p.add_argument("--newton", action="store_true", help="finish with Newton polishing")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="benchmarks (ratios measured side by side)")
    p.add_argument("what", choices=["trainer", "agreement", "grid", "gpu-grid", "tracking", "soak"])
    p.add_argument(
        "--k", default=None, help="trainer: teacher sizes k = n (default 8,13,20); gpu-grid: k to keep"
    )
    p.add_argument(
        "--runs",
        type=int,
        default=None,
        help="trainer: 1000 batched runs; agreement: 500 seeds; grid: 20 per cell; tracking: 1000; "
        "soak: 2 per trial",
    )
    p.add_argument("--trials", type=int, default=None, help="soak: trials (default 3000)")
    p.add_argument("--anchor-runs", type=int, default=40, help="trainer: runs of the per-run numpy anchor")
    p.add_argument("--blocks", type=int, default=4, help="trainer: alternating anchor/engine blocks per k")
    p.add_argument(
        "--engines",
        default=None,
        help="trainer: engine columns (comma-separated; default compiled,compiled plain,torch): an engine of "
        "train.engine, or '<engine> plain'; gpu-grid: the one engine that trains (default auto)",
    )
    p.add_argument("--device", default="cpu", help="trainer, gpu-grid: torch device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (1: per-core comparison)")
    p.add_argument("--excess", default="0", help="agreement: n - k values (comma-separated)")
    p.add_argument("--switch-at", type=float, default=1e-2, help="agreement: the Newton switch to check")
    p.add_argument("--out", default=None, help="grid: output folder (default: a temporary one)")
    p.add_argument("--cpus", type=int, default=None, help="grid, soak: local Ray CPUs (default: all)")
    p.add_argument("--sampler", default="random", help="soak: the hunt's sampler, random or tpe")
    p.set_defaults(func=cmd_bench)

    _add_hunt_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    telemetry_off()  # before any library that reads it is imported
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("\ninterrupted: finished work is kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
