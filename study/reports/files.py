"""Writing run results to disk: a CSV of runs and an npz of arrays, in a fresh folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from study.runs import RunBatch


def write_run_batch(batch: RunBatch, out: Path, *, config: dict[str, Any]) -> Path:
    """Write ``runs.csv`` (one row per run), ``arrays.npz`` (end points, inits, spectra, loss curves)
    and ``config.json`` into ``out``; files are written under temporary names and renamed."""
    out.mkdir(parents=True, exist_ok=True)
    tmp_csv = out / "runs.csv.tmp"
    batch.frame.to_csv(tmp_csv, index=False)
    tmp_npz = out / "arrays.tmp.npz"
    np.savez_compressed(
        tmp_npz,
        theta=batch.theta,
        theta0=batch.theta0,
        eigenvalues=batch.eigenvalues,
        curve_steps=batch.curve_steps,
        curve=batch.curve,
        seed=batch.frame["seed"].to_numpy(),
    )
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    tmp_csv.replace(out / "runs.csv")
    tmp_npz.replace(out / "arrays.npz")
    return out
