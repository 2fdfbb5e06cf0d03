"""The unit of work: train a chunk of seeded replicas of one configuration and diagnose the end points.

A :class:`RunSpec` names the landscape and the procedure that trains it (default: the landscape's own
``default_procedure``); workers (Ray tasks), the CLI and the benchmarks all call :func:`run_replicas`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from study.diagnostics.critical import DiagnosticsConfig
from study.diagnostics.verify import FamilyVerification, with_verdicts
from study.landscapes.base import DTYPES
from study.landscapes.registry import default_procedure, landscape_config, make_landscape
from study.procedures.base import Job
from study.procedures.registry import procedure
from study.record import CriticalPoint, RunBatch
from study.training.gd import TrainConfig

__all__ = ["RunBatch", "RunSpec", "class_summary", "run_replicas"]


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run besides its seed (replayable from this and the seed).

    ``train`` is the procedure's configuration (None: its defaults); ``procedure`` "" is the landscape's
    default procedure.
    """

    landscape: str
    params: dict[str, Any]
    train: Any = None
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    init_scheme: str = "xavier-normal"
    init_scale: float = 1.0
    dtype: str = "float64"
    procedure: str = ""
    verify: FamilyVerification = FamilyVerification()  # re-verification by family (not what runs)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        name = self.procedure or default_procedure(self.landscape)
        config_cls = procedure(name).config_cls
        train = config_cls() if self.train is None else self.train
        if not isinstance(train, config_cls):
            raise ValueError(
                f"train: procedure {name!r} takes a {config_cls.__name__}, got {type(train).__name__}"
            )
        object.__setattr__(self, "procedure", name)
        object.__setattr__(self, "train", train)

    def flat_config(self) -> dict[str, Any]:
        """Flat key -> value view for logging as parameters (only what the run reads)."""
        out: dict[str, Any] = {
            "landscape": self.landscape,
            "procedure": self.procedure,
            "init_scheme": self.init_scheme,
            "init_scale": self.init_scale,
            "dtype": self.dtype,
        }
        out.update({f"landscape.{k}": v for k, v in self.params.items()})
        out.update({f"train.{k}": v for k, v in dataclasses.asdict(self.train).items()})
        out.update({f"diagnostics.{k}": v for k, v in dataclasses.asdict(self.diagnostics).items()})
        return out

    def validate(self) -> None:
        """Raise ValueError naming the field when the landscape rejects ``params``."""
        landscape_config(self.landscape, self.params)


def run_replicas(
    spec: RunSpec,
    seeds: list[int],
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> RunBatch:
    """Train one replica per seed with the spec's procedure as one batched computation.

    Training runs in ``spec.dtype``; diagnostics always run in float64.
    """
    device = torch.device(device)
    landscape = make_landscape(spec.landscape, spec.params, device=device, dtype=DTYPES[spec.dtype])

    def exact() -> Any:
        if spec.dtype == "float64":
            return landscape
        return make_landscape(spec.landscape, spec.params, device=device, dtype=torch.float64)

    job = Job(
        landscape=landscape,
        exact=exact,
        config=spec.train,
        diagnostics=spec.diagnostics,
        init_scheme=spec.init_scheme,
        init_scale=spec.init_scale,
        device=device,
    )
    return procedure(spec.procedure).run(job, seeds, progress=progress)


def verifies(spec: RunSpec) -> bool:
    """Whether the spec's certified spurious minima are re-verified (:mod:`study.diagnostics.verify`):
    when ``diagnostics.reverify`` is on, for the descent procedure (re-verification polishes by gradient
    descent)."""
    return spec.diagnostics.reverify and isinstance(spec.train, TrainConfig)


def verify_runs(
    spec: RunSpec,
    frame: pd.DataFrame,
    theta: np.ndarray,
    theta0: np.ndarray,
    eigenvalues: np.ndarray | None = None,
) -> pd.DataFrame:
    """``frame`` (rows aligned with ``theta, theta0: (R, P)``) with verdict columns: its certified spurious
    minima, labelled against each row's ``l_star``, re-verified by family in float64 on the CPU
    (``eigenvalues: (R, P)``, their spectra, computed there if None)."""
    exact = make_landscape(spec.landscape, spec.params, device="cpu", dtype=torch.float64)
    return with_verdicts(
        exact, frame, theta, theta0, train_config=spec.train, diagnostics=spec.diagnostics,
        families=spec.verify, eigenvalues=eigenvalues,
    )  # fmt: skip


def verify_batch(spec: RunSpec, batch: RunBatch) -> RunBatch:
    """The batch with verdict columns where the landscape knows L* (its labels are final in the worker);
    unchanged where L* is unknown: there the hunt driver labels against the best of the configuration and
    re-verifies its candidates as follow-up tasks (:mod:`study.search.labels`), and unchanged when
    :func:`verifies` is off."""
    if not verifies(spec) or not (batch.frame["l_star_source"] == "landscape").all():
        return batch
    frame = verify_runs(spec, batch.frame, batch.theta, batch.theta0, batch.eigenvalues)
    return dataclasses.replace(batch, frame=frame)


def class_summary(frame: pd.DataFrame, *, decimals: int = 6) -> tuple[pd.Series, pd.DataFrame]:
    """Counts per class and the distinct spurious loss values (rounded) with their counts."""
    counts = frame["critical_point"].value_counts()
    spurious = frame[frame["critical_point"] == CriticalPoint.SPURIOUS_MINIMUM]
    levels = (
        spurious.assign(loss=spurious["loss"].round(decimals))
        .groupby("loss")
        .agg(runs=("seed", "size"), certified=("certified", "sum"))
        .reset_index()
    )
    return counts, levels
