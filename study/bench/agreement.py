"""`study bench agreement`: the fast trainer's end points against the published protocol's, seed by seed.

Both sides start from the same seeded initializations (teacher-student, d = k, V = I): the reference
is plain gradient descent by the published protocol, the fast side the same descent with the Newton
finish switched on at ``switch_at``. Each end point is classified (``study.diagnostics.critical``);
the table reports how many seeds end in the same class and how far the losses are apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from study.diagnostics.critical import DiagnosticsConfig, classify
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.training.gd import TrainConfig, train

# the published protocol with a step cap (200,000) that never decides the outcome: a reference run
# still at the cap is reported (column "capped"), never counted as agreement by accident
REFERENCE = TrainConfig(lr=0.1, tol=1e-9, restart_grad_norm=1e4, max_steps=200_000)


@dataclass(frozen=True)
class Agreement:
    """One (k, n) of the table."""

    k: int
    n: int
    seeds: int
    same_class: int
    capped: int  # reference runs that ended at the step cap
    max_loss_diff: float
    loss_diff_above_1e8: int
    classes: dict[str, int]  # the reference's classes
    reference_steps: float  # mean gradient steps
    fast_steps: float  # mean gradient + Newton steps
    reference_seconds: float
    fast_seconds: float


def measure(k: int, n: int, seeds: int, *, switch_at: float, device: torch.device) -> Agreement:
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=n), device=device)
    seed_list = list(range(seeds))
    theta0 = landscape.init(seed_list)
    reference = train(landscape, theta0, REFERENCE)
    fast = train(landscape, theta0, replace(REFERENCE, newton_polish=True, newton_polish_at=switch_at))
    diagnostics = DiagnosticsConfig(gap_tol=1e-3)
    ref_frame, _ = classify(landscape, reference.theta, seeds=seed_list, config=diagnostics)
    fast_frame, _ = classify(landscape, fast.theta, seeds=seed_list, config=diagnostics)
    diff = (landscape.loss(fast.theta) - landscape.loss(reference.theta)).abs()
    same = ref_frame["critical_point"].to_numpy() == fast_frame["critical_point"].to_numpy()
    return Agreement(
        k=k,
        n=n,
        seeds=seeds,
        same_class=int(same.sum()),
        capped=sum(reason == "max_steps" for reason in reference.stop_reason),
        max_loss_diff=float(diff.max()),
        loss_diff_above_1e8=int((diff > 1e-8).sum()),
        classes=ref_frame["critical_point"].value_counts().to_dict(),
        reference_steps=float(reference.total_steps.double().mean()),
        fast_steps=float(fast.total_steps.double().mean()),
        reference_seconds=reference.seconds,
        fast_seconds=fast.seconds,
    )


def main(*, ks: list[int], excess: list[int], seeds: int, switch_at: float, threads: int = 1) -> int:
    torch.set_num_threads(threads)
    print(
        f"agreement: {seeds} seeds per (k, n), plain descent (step 0.1, stop at 1e-9, max 200000 steps) vs "
        f"the same with the Newton finish at stationarity {switch_at:g}; classes with gap_tol 1e-3"
    )
    print(
        "| k | n | seeds | same class | reference at cap | max abs(dF) | abs(dF) > 1e-8 | reference classes "
        "| mean steps (plain / fast) | seconds (plain / fast) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for k in ks:
        for extra in excess:
            row = measure(k, k + extra, seeds, switch_at=switch_at, device=torch.device("cpu"))
            classes = ", ".join(f"{name} {count}" for name, count in sorted(row.classes.items()))
            print(
                f"| {row.k} | {row.n} | {row.seeds} | {row.same_class} | {row.capped} "
                f"| {row.max_loss_diff:.1e} "
                f"| {row.loss_diff_above_1e8} | {classes} | {row.reference_steps:.0f} / {row.fast_steps:.0f} "
                f"| {row.reference_seconds:.0f} / {row.fast_seconds:.0f} |",
                flush=True,
            )
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0
