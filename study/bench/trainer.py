"""`study bench trainer`: each training engine against the published protocol run one network at a time.

The anchor is :func:`study.bench.anchor.find_minimum`, the authors' per-run MATLAB procedure in plain
numpy. The engines are :func:`study.training.gd.train` with ``engine`` "compiled" (one compiled loop
per replica) and "torch" (the batched tensor loop), both with the Newton finish at stationarity 1e-2
(``FAST``), plus the compiled engine on the plain protocol. Everything runs on one thread (a per-core
comparison), in one process, one k after another.

To be robust to the machine's drift, each k runs in ``blocks`` short blocks that alternate anchor
and engines: block b trains the anchor on its slice of the anchor seeds and each engine on its slice of
the batched seeds (the anchor seeds come first in it); a block's ratio is the engine's runs per second
over the anchor's in that block, and the table reports the median ratio over blocks with its range.
Beside each ratio, the engine's replica-steps per second (every replica's gradient and Newton steps,
restarts included, over the engine's seconds). A column is an engine of ``TrainConfig.engine`` (with the
Newton finish) or ``"<engine> plain"`` (the plain protocol): any engine the trainer knows, so a new one
(a CUDA kernel, say) is benchmarked by naming it; an engine that cannot run on the device is left out
with a note. Compilation (numba, once per process) and a first tiny call per engine (kernels, caches,
allocator) are timed apart and never counted. The last line printed is ``speedup: X.Xx``, the first
engine (by default compiled, with the Newton finish) at k = 8 (or the first k).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

try:  # not on a bare GPU image (the bench then runs one BLAS thread only if the image's default is 1)
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - GPU image
    from contextlib import nullcontext

    def threadpool_limits(limits: int) -> nullcontext[None]:  # type: ignore[misc]
        return nullcontext()


from study.bench.anchor import find_minimum
from study.landscapes.teacher_student import TeacherStudent, TeacherStudentConfig
from study.training.gd import TrainConfig, train
from study.training.protocol import ENGINES as TRAIN_ENGINES

PROTOCOL = TrainConfig()  # step 0.1, restart at 1e4, stop at max_i |2 pi grad_i| <= 1e-9
FAST = replace(PROTOCOL, newton_polish=True, newton_polish_at=1e-2)
DEFAULT_ENGINES = ("compiled", "compiled plain", "torch")  # the first: the pipelines' engine and finish


def engine_config(column: str) -> TrainConfig | None:
    """The configuration of a column: ``"<engine>"`` with the Newton finish, ``"<engine> plain"``
    without (None when ``<engine>`` is not one of ``TrainConfig.engine``'s values)."""
    engine, _, plain = column.partition(" ")
    if engine not in TRAIN_ENGINES or engine == "auto" or plain not in ("", "plain"):
        return None
    return replace(PROTOCOL if plain else FAST, engine=engine)


@dataclass(frozen=True)
class Row:
    """One k: the anchor's runs per second, each engine's median ratio to it over blocks and range."""

    k: int
    anchor_rate: float
    ratios: dict[str, tuple[float, float, float]]  # engine -> (median, lowest, highest) block ratio
    step_rates: dict[str, float]  # engine -> replica-steps per second over all blocks
    anchor_vs_compiled: float  # max |theta_anchor - theta_plain compiled| over the anchor's seeds
    steps_equal: bool  # anchor and plain compiled stop at the same step on every anchor seed


def _timed(
    landscape: TeacherStudent, theta0: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """End points, seconds and total steps of one engine call."""
    if theta0.device.type == "cuda":
        torch.cuda.synchronize(theta0.device)
    start = time.perf_counter()
    result = train(landscape, theta0, config)
    if theta0.device.type == "cuda":
        torch.cuda.synchronize(theta0.device)
    return result.theta, time.perf_counter() - start, result.total_steps


def measure(
    k: int, *, runs: int, anchor_runs: int, blocks: int, device: torch.device, engines: list[str]
) -> Row:
    """Anchor and engines on the same seeds for k = n, d = k, V = I, in alternating blocks."""
    landscape = TeacherStudent(TeacherStudentConfig(k=k, n=k), device=device)
    theta0 = landscape.init(list(range(runs)))  # (R, P)
    configs = {name: config for name in engines if (config := engine_config(name)) is not None}
    for config in configs.values():  # kernels, caches, allocator: not counted
        train(landscape, theta0[:8], replace(config, max_steps=200))
    anchor_cut = np.linspace(0, anchor_runs, blocks + 1).astype(int)
    rest_cut = anchor_runs + np.linspace(0, runs - anchor_runs, blocks + 1).astype(int)
    ratios: dict[str, list[float]] = {name: [] for name in configs}
    steps_done = dict.fromkeys(configs, 0)
    seconds_spent = dict.fromkeys(configs, 0.0)
    anchor_seconds = 0.0
    ends: list[np.ndarray] = []
    anchor_steps: list[int] = []
    plain_steps: list[int] = []
    plain_theta: list[torch.Tensor] = []
    for b in range(blocks):
        seeds = slice(int(anchor_cut[b]), int(anchor_cut[b + 1]))
        start = time.perf_counter()
        for w0 in theta0[seeds].cpu().numpy().reshape(-1, k, k):
            one = find_minimum(w0, np.eye(k), max_steps=PROTOCOL.max_steps)
            ends.append(one.W.ravel())
            anchor_steps.append(one.total_steps)
        seconds = time.perf_counter() - start
        anchor_seconds += seconds
        anchor_rate = (seeds.stop - seeds.start) / seconds
        # the block's anchor seeds first, then its share of the other seeds
        rows = np.r_[seeds.start : seeds.stop, int(rest_cut[b]) : int(rest_cut[b + 1])]
        batch = theta0[torch.as_tensor(rows)]
        for name, config in configs.items():
            theta, engine_seconds, steps = _timed(landscape, batch, config)
            ratios[name].append(batch.shape[0] / engine_seconds / anchor_rate)
            steps_done[name] += int(steps.sum())
            seconds_spent[name] += engine_seconds
            if name == "compiled plain":
                n_anchor = seeds.stop - seeds.start
                plain_theta.append(theta[:n_anchor].cpu())
                plain_steps.extend(steps[:n_anchor].tolist())
    anchor_theta = torch.as_tensor(np.stack(ends))
    gap = float((anchor_theta - torch.cat(plain_theta)).abs().max()) if plain_theta else float("nan")
    return Row(
        k=k,
        anchor_rate=anchor_runs / anchor_seconds,
        ratios={name: (statistics.median(v), min(v), max(v)) for name, v in ratios.items()},
        step_rates={name: steps_done[name] / seconds_spent[name] for name in configs},
        anchor_vs_compiled=gap,
        steps_equal=bool(plain_steps) and plain_steps == anchor_steps,
    )


def runnable(engines: list[str], device: torch.device) -> list[str]:
    """The engines that can train on ``device`` (each tried once on a tiny landscape; notes the rest)."""
    tiny = TeacherStudent(TeacherStudentConfig(k=3, n=3), device=device)
    kept = []
    for name in engines:
        config = engine_config(name)
        assert config is not None, name  # the CLI names the columns it accepts
        try:
            train(tiny, tiny.init([0, 1]), replace(config, max_steps=20))
        except ValueError as exc:
            print(f"left out: {name} ({exc})")
            continue
        kept.append(name)
    return kept


def _device_name(device: torch.device) -> str:
    return f"{device}: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else str(device)


def _si(rate: float) -> str:
    """Replica-steps per second with an SI prefix: ``12.3M/s``."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= factor:
            return f"{rate / factor:.3g}{prefix}/s"
    return f"{rate:.3g}/s"


def main(
    *,
    ks: list[int],
    runs: int = 1000,
    anchor_runs: int = 40,
    blocks: int = 4,
    device: str = "cpu",
    threads: int = 1,
    engines: list[str] | None = None,
) -> int:
    dev = torch.device(device)
    torch.set_num_threads(threads)
    engines = runnable(list(DEFAULT_ENGINES) if engines is None else engines, dev)
    if not engines:
        print(f"no engine asked for can run on {dev}")
        return 1
    anchor_runs = min(anchor_runs, runs)
    blocks = max(1, min(blocks, anchor_runs))
    compile_seconds = 0.0
    if dev.type == "cpu" and any(e.startswith("compiled") for e in engines):
        from study.training.compiled import warm_up

        compile_seconds = warm_up(TeacherStudent(TeacherStudentConfig(k=2, n=2)))
    print(
        f"trainer benchmark: teacher-student k = n = d, V = I, step {PROTOCOL.lr}, restart at "
        f"|grad| > {PROTOCOL.restart_grad_norm:g}, stop at max_i |2 pi grad_i| <= {PROTOCOL.tol:g}, float64; "
        f"{threads} thread(s)\nanchor: the published per-run procedure in numpy, {anchor_runs} runs; "
        f"engines on {runs} runs ({_device_name(dev)}), with the Newton finish at {FAST.newton_polish_at:g} "
        f"('plain': without); {blocks} alternating blocks, ratio = median over blocks [range]; "
        f"replica-steps per second over all blocks\n"
        f"compile (numba, once per process, not counted): {compile_seconds:.1f} s"
    )
    columns = "".join(f" {name + ' x [range] steps/s':>32}" for name in engines)
    print(f"{'k':>3} {'anchor runs/s':>14}{columns} {'|anchor-plain|':>15} {'same steps':>10}")
    rows = []
    with threadpool_limits(limits=threads):
        for k in ks:
            row = measure(k, runs=runs, anchor_runs=anchor_runs, blocks=blocks, device=dev, engines=engines)
            rows.append(row)
            cells = "".join(
                f" {f'{m:.1f}x [{lo:.1f}-{hi:.1f}] {_si(row.step_rates[e])}':>32}"
                for e, (m, lo, hi) in row.ratios.items()
            )
            print(
                f"{k:>3} {row.anchor_rate:>14.2f}{cells} {row.anchor_vs_compiled:>15.1e}"
                f" {str(row.steps_equal):>10}",
                flush=True,
            )
    head = next((r for r in rows if r.k == 8), rows[0])
    default = next(iter(head.ratios))
    print(f"speedup: {head.ratios[default][0]:.1f}x")
    return 0
