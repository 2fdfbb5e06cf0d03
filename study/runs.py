"""The unit of work: train a chunk of seeded replicas of one configuration and diagnose the end points.

Workers (Ray tasks), the CLI and the benchmarks all call :func:`run_replicas`.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from study.diagnostics.basin import basin_columns
from study.diagnostics.critical import DiagnosticsConfig, classify
from study.diagnostics.verify import with_verdicts
from study.landscapes.registry import landscape_config, make_landscape
from study.record import RunBatch
from study.training.gd import TrainConfig, train

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run besides its seed (replayable from this and the seed)."""

    landscape: str
    params: dict[str, Any]
    train: TrainConfig = TrainConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    init_scheme: str = "xavier-normal"
    init_scale: float = 1.0
    dtype: str = "float64"
    extra: dict[str, Any] = field(default_factory=dict)  # landscape-specific procedure settings

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    def flat_config(self) -> dict[str, Any]:
        """Flat key -> value view for logging as parameters."""
        out: dict[str, Any] = {
            "landscape": self.landscape,
            "init_scheme": self.init_scheme,
            "init_scale": self.init_scale,
            "dtype": self.dtype,
        }
        out.update({f"landscape.{k}": v for k, v in self.params.items()})
        out.update({f"train.{k}": v for k, v in dataclasses.asdict(self.train).items()})
        out.update({f"diagnostics.{k}": v for k, v in dataclasses.asdict(self.diagnostics).items()})
        out.update({f"extra.{k}": v for k, v in self.extra.items()})
        return out

    def validate(self) -> None:
        """Raise ValueError naming the field when the landscape rejects ``params``."""
        landscape_config(self.landscape, self.params)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}"


def run_replicas(
    spec: RunSpec,
    seeds: list[int],
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> RunBatch:
    """Train one replica per seed as a single batched computation, then diagnose each end point.

    Training runs in ``spec.dtype``; diagnostics always run in float64.
    """
    device = torch.device(device)
    landscape = make_landscape(spec.landscape, spec.params, device=device, dtype=DTYPES[spec.dtype])
    custom = getattr(landscape, "run_replicas", None)
    if custom is not None:  # landscapes with their own procedure (e.g. two-phase classification)
        batch: RunBatch = custom(spec, seeds, progress=progress)
        return batch
    start = time.perf_counter()
    theta0 = landscape.init(seeds, scheme=spec.init_scheme, scale=spec.init_scale)  # (R, P)
    result = train(landscape, theta0, spec.train, progress=progress)
    train_seconds = time.perf_counter() - start
    exact = (
        landscape
        if spec.dtype == "float64"
        else make_landscape(spec.landscape, spec.params, device=device, dtype=torch.float64)
    )
    frame, spectrum = classify(
        exact,
        result.theta.to(torch.float64),
        seeds=seeds,
        diverged=result.diverged,
        config=spec.diagnostics,
    )
    for key, values in basin_columns(exact, theta0.to(torch.float64), result.theta.to(torch.float64)).items():
        frame[key] = values
    frame.insert(1, "steps", result.total_steps.cpu().numpy())
    frame.insert(2, "restarts", result.restarts.cpu().numpy())
    frame["final_lr"] = result.lr.cpu().numpy()
    frame["converged"] = result.converged.cpu().numpy()
    frame["stop_reason"] = result.stop_reason
    frame["train_seconds_per_run"] = train_seconds / max(1, len(seeds))
    frame["seconds_per_run"] = (time.perf_counter() - start) / max(1, len(seeds))
    frame["device"] = device_name(device)
    return RunBatch(
        frame=frame,
        theta=result.theta.detach().cpu().numpy(),
        theta0=theta0.detach().cpu().numpy(),
        eigenvalues=spectrum.eigenvalues.detach().cpu().numpy(),
        curve_steps=result.curve_steps.cpu().numpy(),
        curve=result.curve.detach().cpu().numpy(),
    )


def verify_batch(spec: RunSpec, batch: RunBatch) -> RunBatch:
    """The batch with verdict columns: its certified spurious minima re-verified in float64 on the CPU
    (:mod:`study.diagnostics.verify`); unchanged when ``spec.diagnostics.reverify`` is off."""
    if not spec.diagnostics.reverify or "certified" not in batch.frame:
        return batch
    exact = make_landscape(spec.landscape, spec.params, device="cpu", dtype=torch.float64)
    frame = with_verdicts(
        exact, batch.frame, batch.theta, batch.theta0, train_config=spec.train, diagnostics=spec.diagnostics
    )
    return dataclasses.replace(batch, frame=frame)


def class_summary(frame: pd.DataFrame, *, decimals: int = 6) -> tuple[pd.Series, pd.DataFrame]:
    """Counts per class and the distinct spurious loss values (rounded) with their counts."""
    counts = frame["critical_point"].value_counts()
    spurious = frame[frame["critical_point"] == "spurious_minimum"]
    levels = (
        spurious.assign(loss=spurious["loss"].round(decimals))
        .groupby("loss")
        .agg(runs=("seed", "size"), certified=("certified", "sum"))
        .reset_index()
    )
    return counts, levels
