"""`study bench trainer`: the batched trainer against the published protocol run one network at a time.

The anchor is :func:`study.bench.anchor.find_minimum`, the authors' per-run MATLAB procedure in plain
numpy; the batched side is :func:`study.training.gd.train` on ``runs`` replicas, plain (the same
protocol, batched) and fast (with the Newton finish the pipelines use). Both sides train the same
seeds on one thread (a per-core comparison), in one process, one k after another. The anchor trains
the first ``anchor_runs`` of the seeds. The last line printed is ``speedup: X.Xx`` for k = 8 (or the
first k): fast runs per second over anchor runs per second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from study.bench.anchor import find_minimum
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.training.gd import TrainConfig, TrainResult, train

PROTOCOL = TrainConfig()  # step 0.1, restart at 1e4, stop at max_i |2 pi grad_i| <= 1e-9
# the earlier Newton switch measured in docs/RESULTS.md (same class, loss to 1e-8 on 500 seeds at k = 8, 13)
FAST = replace(PROTOCOL, newton_polish=True, newton_polish_at=1e-2)


@dataclass(frozen=True)
class Row:
    """One k of the benchmark: runs per second of each side and how far their end points are apart."""

    k: int
    anchor_rate: float
    plain_rate: float
    fast_rate: float
    anchor_vs_plain: float  # max |theta_anchor - theta_plain| over the anchor's seeds
    fast_vs_plain_loss: float  # max |F(fast) - F(plain)| over all seeds


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_train(
    landscape: TeacherStudent, theta0: torch.Tensor, config: TrainConfig
) -> tuple[TrainResult, float]:
    _synchronize(theta0.device)
    start = time.perf_counter()
    result = train(landscape, theta0, config)
    _synchronize(theta0.device)
    return result, time.perf_counter() - start


def measure(k: int, *, runs: int, anchor_runs: int, device: torch.device) -> Row:
    """Anchor, plain batched and fast batched on the same seeds for k = n, d = k, V = I."""
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=k), device=device)
    theta0 = landscape.init(list(range(runs)))  # (R, P)
    if device.type == "cuda":  # warm-up (kernels, allocator) outside the timings
        train(landscape, theta0[:8], replace(FAST, max_steps=200))
    plain, plain_seconds = _timed_train(landscape, theta0, PROTOCOL)
    fast, fast_seconds = _timed_train(landscape, theta0, FAST)

    init = theta0[:anchor_runs].cpu().numpy().reshape(anchor_runs, k, k)
    teacher = np.eye(k)
    start = time.perf_counter()
    ends = [find_minimum(w0, teacher, max_steps=PROTOCOL.max_steps).W for w0 in init]
    anchor_seconds = time.perf_counter() - start
    anchor_theta = torch.as_tensor(np.stack(ends).reshape(anchor_runs, -1))
    return Row(
        k=k,
        anchor_rate=anchor_runs / anchor_seconds,
        plain_rate=runs / plain_seconds,
        fast_rate=runs / fast_seconds,
        anchor_vs_plain=float((anchor_theta - plain.theta[:anchor_runs].cpu()).abs().max()),
        fast_vs_plain_loss=float((landscape.loss(fast.theta) - landscape.loss(plain.theta)).abs().max()),
    )


def main(
    *, ks: list[int], runs: int = 1000, anchor_runs: int = 32, device: str = "cpu", threads: int = 1
) -> int:
    dev = torch.device(device)
    torch.set_num_threads(threads)
    anchor_runs = min(anchor_runs, runs)
    print(
        f"trainer benchmark: teacher-student k = n = d, V = I, step {PROTOCOL.lr}, restart at "
        f"|grad| > {PROTOCOL.restart_grad_norm:g}, stop at max_i |2 pi grad_i| <= {PROTOCOL.tol:g}, float64; "
        f"{threads} thread(s)\nanchor: the published per-run procedure in numpy, {anchor_runs} runs; "
        f"batched: study.training.gd.train on {runs} runs ({dev}), plain and with the Newton finish "
        f"(switch at stationarity {FAST.newton_polish_at:g})"
    )
    header = (
        f"{'k':>3} {'anchor runs/s':>14} {'plain runs/s':>13} {'x':>6} {'fast runs/s':>12} {'x':>6}"
        f" {'|anchor-plain|':>15} {'|dF fast-plain|':>16}"
    )
    print(header)
    rows = []
    with threadpool_limits(limits=threads):
        for k in ks:
            row = measure(k, runs=runs, anchor_runs=anchor_runs, device=dev)
            rows.append(row)
            plain_x, fast_x = row.plain_rate / row.anchor_rate, row.fast_rate / row.anchor_rate
            print(
                f"{k:>3} {row.anchor_rate:>14.2f} {row.plain_rate:>13.2f} {plain_x:>5.1f}x"
                f" {row.fast_rate:>12.2f} {fast_x:>5.1f}x"
                f" {row.anchor_vs_plain:>15.1e} {row.fast_vs_plain_loss:>16.1e}",
                flush=True,
            )
    head = next((r for r in rows if r.k == 8), rows[0])
    print(f"speedup: {head.fast_rate / head.anchor_rate:.1f}x")
    return 0
