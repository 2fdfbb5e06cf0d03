"""`study bench trainer`: batched training against one-run-at-a-time with the same code, side by side.

Both sides train the same seeds with :func:`study.training.gd.train` to the published stopping rule;
the serial side trains a prefix of those seeds one at a time (R = 1) and the batched side all of them
as one computation. The last line printed is ``speedup: X.Xx`` (runs per second, batched / serial).
"""

from __future__ import annotations

import time

import torch

from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.training.gd import TrainConfig, train


def _rate(runs: int, seconds: float) -> float:
    return runs / seconds if seconds > 0 else float("inf")


def per_step_cost(k: int, runs: int, steps: int, device: torch.device) -> tuple[float, float]:
    """Microseconds per (run, step) for R = ``runs`` and for R = 1, over ``steps`` plain GD steps."""
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=k), device=device)
    out = []
    for R in (runs, 1):
        theta = landscape.init(list(range(R)))
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            theta = theta - 0.1 * landscape.grad(theta)
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(1e6 * (time.perf_counter() - start) / (steps * R))
    return out[0], out[1]


def main(
    *,
    k: int = 8,
    runs: int = 256,
    serial_runs: int = 32,
    scaling: str = "6,10,14,20",
    device: str = "cpu",
    threads: int = 1,
) -> int:
    torch.set_num_threads(threads)
    dev = torch.device(device)
    config = TrainConfig()
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=k), device=dev)
    seeds = list(range(runs))
    serial_runs = min(serial_runs, runs)
    print(
        f"trainer benchmark: teacher-student k = n = {k}, lr {config.lr}, stop at "
        f"max_i |2 pi grad_i| <= {config.tol:g}, float64, {dev}, torch threads {torch.get_num_threads()}"
    )

    theta0 = landscape.init(seeds)
    batched = train(landscape, theta0, config)
    batched_rate = _rate(runs, batched.seconds)
    print(
        f"batched : {runs:5d} runs in {batched.seconds:8.2f} s = {batched_rate:8.2f} runs/s "
        f"(mean {batched.total_steps.float().mean():.0f} steps, "
        f"{int(batched.converged.sum())} converged)"
    )

    serial_seconds = 0.0
    max_diff = 0.0
    for r in range(serial_runs):
        one = train(landscape, theta0[r : r + 1], config)
        serial_seconds += one.seconds
        max_diff = max(max_diff, float((one.theta[0] - batched.theta[r]).abs().max()))
    serial_rate = _rate(serial_runs, serial_seconds)
    print(
        f"serial  : {serial_runs:5d} runs in {serial_seconds:8.2f} s = {serial_rate:8.2f} runs/s "
        f"(the first {serial_runs} of the same seeds, R = 1 each)"
    )
    print(f"same end points: max |batched - serial| = {max_diff:.2e}")

    ks = [int(x) for x in scaling.split(",") if x.strip()]
    if ks:
        print("\nbatched cost per run-step as k grows (k = n, 300 GD steps):")
        print(f"{'k':>4} {'R':>5} {'us/run-step batched':>20} {'us/run-step R=1':>16} {'ratio':>7}")
        for kk in ks:
            b, s = per_step_cost(kk, runs, 300, dev)
            print(f"{kk:>4} {runs:>5} {b:>20.2f} {s:>16.2f} {s / b:>6.1f}x")
    print(f"speedup: {batched_rate / serial_rate:.1f}x")
    return 0
