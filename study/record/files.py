"""The run record on disk: per-trial files, the hunt's runs.csv and trials.csv, and reading them back.

Layout of a hunt folder ``OUT``::

    OUT/trials/trial-XXXXX.npz   arrays of one trial's runs (theta, theta0, eigenvalues, curve, seed)
    OUT/trials/trial-XXXXX.csv   one row per run (the record's columns); written after the npz
    OUT/runs.csv                 every trial's rows: appended per finished trial, rebuilt from the trial
                                 files when a hunt ends or resumes (study.search.tables)
    OUT/trials.csv               one row per finished trial: the same

Every file is written under a temporary name and renamed, so a kill leaves either the old file or the
new one, never half of one; the one exception is a table's per-trial append (one write of whole
rows), and a table is rebuilt from the trial files when its hunt resumes. A trial CSV that cannot be
read (left by an older, non-atomic writer) is skipped, and its trial is run again on resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study.record.schema import RunBatch, migrate, param_column, stamp

ARRAY_KEYS = ("theta", "theta0", "eigenvalues", "curve", "curve_steps", "seed")


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def create_whole(path: Path, build: Callable[[Path], object]) -> None:
    """Make ``path`` if it is not there: ``build(tmp)`` on a temporary file beside it, then a hard link
    into place, so no process ever opens it half made; where another process links its own first, that
    one is kept. For SQLite stores whose schema the library creates in place without a lock (Optuna's,
    MLflow's): two processes creating one at once fail, and a reader that opens it first creates too."""
    if path.exists() or not path.parent.is_dir():
        return
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(name)  # the library makes the file itself
    tmp = Path(name)
    try:
        build(tmp)
        with contextlib.suppress(FileExistsError):  # another process made it first: keep theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_json(data: Any, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str)))


def write_arrays(arrays: dict[str, np.ndarray], path: Path) -> Path:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

    return atomic_write(path, save)


def append_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Append ``frame``'s rows (no header) to the CSV at ``path`` in one write."""
    text = frame.to_csv(index=False, header=False)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
    return path


def read_csv(path: Path) -> pd.DataFrame | None:
    """A CSV as a DataFrame, None when it is missing, empty or cut short."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return None


# ---- per-trial files --------------------------------------------------------------------------------
def trial_stem(seed_base: int) -> str:
    return f"trial-{int(seed_base):05d}"


def trial_frame(
    batch: RunBatch, *, trial: int, seed_base: int, values: dict[str, Any], landscape: str
) -> pd.DataFrame:
    """A trial's runs frame: trial columns first, the record, parameter values, landscape and schema."""
    frame = batch.frame.copy()
    frame.insert(0, "trial", trial)
    frame.insert(1, "seed_base", seed_base)
    for key, value in values.items():
        frame[param_column(key)] = str(value) if isinstance(value, tuple | list) else value
    return stamp(frame, landscape)


def save_trial(out: Path, frame: pd.DataFrame, batch: RunBatch, *, seed_base: int) -> Path:
    """Write a trial's arrays and then its CSV (the CSV's presence marks the trial's files complete)."""
    folder = out / "trials"
    stem = trial_stem(seed_base)
    write_arrays(batch.arrays(), folder / f"{stem}.npz")
    return write_csv(frame, folder / f"{stem}.csv")


def trial_files(out: Path) -> list[Path]:
    return sorted((out / "trials").glob("trial-*.csv"))


def load_runs(out: Path) -> pd.DataFrame:
    """Every readable trial CSV of ``out`` in one frame, at the current schema."""
    frames = [f for f in (read_csv(p) for p in trial_files(out)) if f is not None and len(f.columns)]
    if not frames:
        return pd.DataFrame()
    return migrate(pd.concat([migrate(f) for f in frames], ignore_index=True))


def saved_seed_bases(out: Path) -> set[int]:
    """Seed bases of the trials whose files are complete."""
    done = set()
    for path in trial_files(out):
        frame = read_csv(path)
        if frame is not None and len(frame) and (path.with_suffix(".npz")).is_file():
            done.add(int(path.stem.split("-")[1]))
    return done


def load_arrays(out: Path, stem: str, keys: tuple[str, ...] = ARRAY_KEYS) -> dict[str, np.ndarray]:
    """The arrays of one trial's npz (empty when missing or unreadable)."""
    path = out / "trials" / f"{stem}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in keys if key in data.files}
    except (FileNotFoundError, OSError, ValueError):
        return {}


def iter_trial_arrays(out: Path) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    for path in trial_files(out):
        yield path.stem, load_arrays(out, path.stem)


# ---- hunt tables ---------------------------------------------------------------------------------------
def write_tables(
    out: Path,
    trials: pd.DataFrame,
    *,
    relabel: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    runs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Rewrite ``runs.csv`` (from the trial files) and ``trials.csv``; returns the runs frame.

    ``relabel`` is applied to the whole hunt's runs first (the driver passes
    :func:`study.diagnostics.critical.relabel_unknown_optimum`, so that where L* is unknown runs are
    labelled against the best of their configuration over the hunt). ``runs``: the hunt's runs as
    :func:`load_runs` read them, when the caller has them already.
    """
    runs = load_runs(out) if runs is None else runs
    if relabel is not None and len(runs):
        runs = relabel(runs)
    write_csv(runs, out / "runs.csv")
    write_csv(trials, out / "trials.csv")
    return runs


def read_runs_table(out: Path) -> pd.DataFrame:
    """``out/runs.csv`` at the current schema; FileNotFoundError names what is missing."""
    csv = out / "runs.csv"
    if not csv.is_file():
        if trial_files(out):  # an interrupted hunt that wrote no table yet: the trial files hold it all
            return load_runs(out)
        raise FileNotFoundError(f"no runs.csv in {out} (has the hunt finished a trial?)")
    frame = read_csv(csv)
    return migrate(frame) if frame is not None else pd.DataFrame()


def refresh_runs_table(out: Path) -> tuple[int, int] | None:
    """Rewrite ``out/runs.csv`` from the trial files where it differs from them in its runs (keyed
    ``seed_base``, ``seed``) or their labels (class, and verdict and ``verified_by`` where the trial
    files have them): what a hunt killed between a trial's files and its table append leaves, until it
    resumes. Returns (rows before, rows after) when rewritten, else None. Only while no driver writes
    the folder (the caller checks)."""
    runs = load_runs(out)
    if not len(runs) or not {"seed_base", "seed", "critical_point"} <= set(runs.columns):
        return None
    table = read_csv(out / "runs.csv")
    table = migrate(table) if table is not None and len(table.columns) else pd.DataFrame()
    labels = [c for c in ("critical_point", "verdict", "verified_by") if c in runs.columns]

    def keyed(frame: pd.DataFrame) -> list[tuple[object, ...]]:
        if not {"seed_base", "seed", "critical_point"} <= set(frame.columns):
            return []
        text = [  # a blank label reads back from CSV as NaN: both are ""
            frame[c].astype(object).where(frame[c].notna(), "").astype(str)
            if c in frame
            else pd.Series("", index=frame.index)
            for c in labels
        ]
        return sorted(zip(frame["seed_base"].astype(int), frame["seed"].astype(int), *text, strict=True))

    if keyed(table) == keyed(runs):
        return None
    write_csv(runs, out / "runs.csv")
    return len(table), len(runs)


def write_run_batch(batch: RunBatch, out: Path, *, config: dict[str, Any], landscape: str) -> Path:
    """Write a batch made outside a hunt: ``runs.csv``, ``arrays.npz`` and ``config.json`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(config, out / "config.json")
    write_arrays(batch.arrays(), out / "arrays.npz")
    write_csv(stamp(batch.frame.copy(), landscape), out / "runs.csv")
    return out
