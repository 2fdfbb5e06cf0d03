"""What a training procedure is: a function from a job and seeds to a :class:`RunBatch`.

A landscape gives values and derivatives; a procedure trains replicas on it and diagnoses the end
points. Procedures are registered in :mod:`study.procedures.registry` with their configuration class;
a pipeline names one (``procedure:``) or gets its landscape's ``default_procedure``.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from study.diagnostics.critical import DiagnosticsConfig
from study.landscapes.base import Landscape
from study.record import RunBatch

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Job:
    """One configuration to train: the landscape in the training dtype, how to build it in float64 for
    diagnostics, the procedure's configuration and the run settings every procedure shares."""

    landscape: Landscape
    exact: Callable[[], Landscape]  # the same landscape in float64 (itself when already float64)
    config: Any  # the procedure's frozen configuration dataclass
    diagnostics: DiagnosticsConfig
    init_scheme: str
    init_scale: float
    device: torch.device


class Run(Protocol):
    def __call__(self, job: Job, seeds: list[int], *, progress: Progress | None = None) -> RunBatch: ...


@dataclass(frozen=True)
class Procedure:
    """A registered procedure: its configuration dataclass (``train:`` in a pipeline), its run, and the
    columns its runs have besides the record's core columns and the landscape's own (its hypotheses and
    ``run_diagnostics``); the procedure contract holds a run's columns to exactly these."""

    name: str
    config_cls: type
    run: Run
    description: str = ""
    columns: tuple[str, ...] = ()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}"
