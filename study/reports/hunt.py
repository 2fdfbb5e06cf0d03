"""A hunt folder as reports see it: runs (one row per training run) and their arrays, read through
:mod:`study.record`."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study.record import PARAM_PREFIX, load_arrays, param_column, read_runs_table, trial_stem

ARRAY_KEYS = ("theta", "eigenvalues", "seed")  # what reports read (not inits or loss curves)
WIDTH_COLUMNS = tuple(param_column(name) for name in ("n", "width", "hidden", "d1", "widths"))


@dataclass(frozen=True)
class HuntFolder:
    """A hunt's runs and arrays. ``runs`` gains ``array_file`` and ``array_row`` (-1: no arrays)."""

    out: Path
    name: str
    landscape: str
    runs: pd.DataFrame
    arrays: dict[str, dict[str, np.ndarray]]  # npz stem -> {"theta": (R, P), "eigenvalues": (R, P), "seed"}

    @property
    def param_columns(self) -> list[str]:
        return [c for c in self.runs.columns if c.startswith(PARAM_PREFIX)]

    def stacked(self, rows: pd.DataFrame, key: str) -> np.ndarray | None:
        """``arrays[key]`` for ``rows`` in their order, ``(len(rows), P)``; None if any is missing or
        the widths differ."""
        parts = []
        for file, row in zip(rows["array_file"], rows["array_row"], strict=True):
            if row < 0 or key not in self.arrays.get(file, {}):
                return None
            parts.append(self.arrays[file][key][row])
        if not parts or len({p.shape for p in parts}) != 1:
            return None
        return np.stack(parts)


def hunt_name(out: Path) -> str:
    """The hunt's name: the Optuna study in ``out/optuna.db`` when there is exactly one, else the folder."""
    db = out / "optuna.db"
    if db.is_file():
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                names = [row[0] for row in conn.execute("SELECT study_name FROM studies")]
        except sqlite3.Error:
            names = []
        if len(names) == 1:
            return str(names[0])
    return out.resolve().name


def load_hunt(out: Path) -> HuntFolder:
    """Read a hunt's runs and per-trial arrays through the run record; FileNotFoundError names what
    is missing. An interrupted hunt is read from its trial files."""
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"hunt folder not found: {out}")
    runs = read_runs_table(out)
    if len(runs) and not {"critical_point", "seed"} <= set(runs.columns):
        raise ValueError(f"the runs of {out} lack the columns critical_point and seed")
    arrays: dict[str, dict[str, np.ndarray]] = {}
    files: list[str] = []
    rows: list[int] = []
    index: dict[str, dict[int, int]] = {}
    for seed_base, seed in zip(
        runs.get("seed_base", pd.Series(-1, index=runs.index)), runs.get("seed", runs.index), strict=True
    ):
        stem = trial_stem(int(seed_base))
        if stem not in index:
            arrays[stem] = load_arrays(out, stem, ARRAY_KEYS)
            index[stem] = {int(s): i for i, s in enumerate(arrays[stem].get("seed", []))}
        files.append(stem)
        rows.append(index[stem].get(int(seed), -1))
    runs = runs.assign(array_file=files, array_row=rows)
    landscapes = sorted(set(runs["landscape"])) if "landscape" in runs else []
    landscape = landscapes[0] if len(landscapes) == 1 else "unknown"
    return HuntFolder(out=out, name=hunt_name(out), landscape=landscape, runs=runs, arrays=arrays)


# ---- what the driver recorded --------------------------------------------------------------------
def hunt_record(out: Path, name: str = "hunt.json") -> dict[str, Any]:
    """``OUT/hunt.json`` (what the driver recorded about the hunt; ``name``: another of its JSON files,
    e.g. ``hunt_stats.json``), empty when absent."""
    try:
        data = json.loads((out / name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def recorded_fixed(hunt: HuntFolder) -> dict[str, Any]:
    """The pipeline's fixed values as the driver recorded them (``fixed`` in ``OUT/hunt.json``)."""
    fixed = hunt_record(hunt.out).get("fixed")
    return fixed if isinstance(fixed, dict) else {}
