"""Counterexample artifacts, bounded: every certified spurious minimum keeps, in its own MLflow run under
``counterexample/``, its weights, initialization, Hessian spectrum (``.npy``) and ``certificate.json``, and
a plot of the Hessian spectra of its trial's families (``family_spectra.png``); the plot is drawn once per
trial, one line per family, and linked into each counterexample run, not drawn per run.

A family is the ``family`` column where the run was re-verified (:mod:`study.diagnostics.verify`), else
the same key computed here (:func:`study.record.schema.family_key`: the loss and a digest of the rounded
spectrum). Files go straight into a run's artifact folder when its artifact URI is local (the small files
of a trial written in bulk, no client call per run); elsewhere (a tracking server's proxied artifacts)
each run's folder is uploaded by its artifact repository. The trial's run gets the plot and
``families.json`` (each family's loss, lambda_min, size and run keys) under ``families/``. Runs
relabelled later get their files rewritten but keep the trial's plot (not redrawn from them alone).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from study.record import CriticalPoint, RunBatch
from study.record.schema import family_key
from study.tracking import naming

FOLDER = "counterexample"
FAMILY_PLOT = "family_spectra.png"


@dataclass(frozen=True)
class Counterexample:
    """A certified spurious minimum to give artifacts: its run key, row in the batch, row's values and
    the artifact URI of its MLflow run."""

    key: str
    row: int
    data: dict[str, Any]
    artifact_uri: str


def family_of(data: dict[str, Any], eigenvalues: np.ndarray) -> str:
    """The run's family: its ``family`` column when re-verified, else its loss and spectrum digest."""
    family = data.get("family")
    if isinstance(family, str) and family:
        return family
    loss = float(data["loss"])
    return family_key(loss, eigenvalues, np.zeros(0)) if eigenvalues.size else f"{loss:.6g}"


def write_counterexamples(
    client: MlflowClient,
    trial_run_id: str | None,
    chosen: list[Counterexample],
    batch: RunBatch,
    *,
    values: dict[str, Any],
    trial_number: int,
) -> None:
    """Write the artifacts of ``chosen`` (see the module's docstring) and the trial's ``families/`` in
    the run ``trial_run_id`` (None when ``chosen`` is not the whole trial: runs relabelled later)."""
    if not chosen:
        return
    families: dict[str, list[Counterexample]] = {}
    for c in chosen:
        families.setdefault(family_of(c.data, batch.eigenvalues[c.row]), []).append(c)
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "families"
        summary.mkdir()
        plot = None  # relabelled runs alone are not the trial's families: their runs keep its plot
        if trial_run_id is not None:
            plot = _family_plot(families, batch, summary / FAMILY_PLOT, trial_number)
        for c in chosen:
            with _run_folder(c.artifact_uri, Path(tmp) / str(c.row), client.tracking_uri) as folder:
                np.save(folder / "weights.npy", batch.theta[c.row])
                np.save(folder / "init.npy", batch.theta0[c.row])
                if batch.eigenvalues.shape[1]:
                    np.save(folder / "hessian_eigenvalues.npy", batch.eigenvalues[c.row])
                certificate = naming.certificate_json(c.data, values, key=c.key, trial=trial_number)
                (folder / "certificate.json").write_text(certificate)
                if plot is not None:
                    _link(plot, folder / FAMILY_PLOT)
        if trial_run_id is not None:
            (summary / "families.json").write_text(json.dumps(_family_table(families), indent=1))
            client.log_artifacts(trial_run_id, str(summary), artifact_path="families")


@contextlib.contextmanager
def _run_folder(artifact_uri: str, staging: Path, tracking_uri: str) -> Iterator[Path]:
    """The folder to fill with a run's ``counterexample/`` files: inside its artifact store when that is
    local, else ``staging``, uploaded when filled."""
    local = _local_path(artifact_uri)
    folder = (local / FOLDER) if local is not None else staging
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    if local is None:
        get_artifact_repository(artifact_uri, tracking_uri=tracking_uri).log_artifacts(str(folder), FOLDER)


def _local_path(artifact_uri: str) -> Path | None:
    if urlparse(artifact_uri).scheme in ("file", ""):
        return Path(local_file_uri_to_path(artifact_uri))
    return None


def _link(source: Path, target: Path) -> None:
    """A hard link (one plot on disk for the whole trial), a copy across file systems."""
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _representatives(families: dict[str, list[Counterexample]]) -> dict[str, tuple[Counterexample, int]]:
    """Each family's lowest-loss member and its size, families in order of loss."""
    chosen = {name: (min(group, key=_loss), len(group)) for name, group in families.items()}
    return dict(sorted(chosen.items(), key=lambda item: _loss(item[1][0])))


def _loss(c: Counterexample) -> float:
    return float(c.data["loss"])


def _family_plot(
    families: dict[str, list[Counterexample]], batch: RunBatch, path: Path, trial_number: int
) -> Path | None:
    if not batch.eigenvalues.shape[1]:
        return None
    from study.reports.plots import family_spectra_plot

    classes = batch.frame["critical_point"].to_numpy()
    global_rows = np.flatnonzero(classes == CriticalPoint.GLOBAL_MINIMUM)
    spectra = {
        f"L = {float(c.data['loss']):.6g} ({size} runs)": batch.eigenvalues[c.row]
        for c, size in _representatives(families).values()
    }
    return family_spectra_plot(
        spectra,
        path,
        title=f"Hessian spectra of trial {trial_number}'s certified spurious minima, one line per family",
        reference=batch.eigenvalues[global_rows[0]] if len(global_rows) else None,
        reference_label="a global minimum of the same trial",
    )


def _family_table(families: dict[str, list[Counterexample]]) -> list[dict[str, Any]]:
    rows = []
    for name, (first, size) in _representatives(families).items():
        lambda_min = first.data.get("lambda_min")
        rows.append(
            {
                "family": name,
                "loss": float(first.data["loss"]),
                "lambda_min": None if lambda_min is None or pd.isna(lambda_min) else float(lambda_min),
                "runs": size,
                "representative": first.key,
                "run_keys": [c.key for c in families[name]],
            }
        )
    return rows
