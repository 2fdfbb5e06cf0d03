"""The hunt's ``runs.csv`` and ``trials.csv``, kept current after each finished trial at a cost that does
not grow with the hunt.

``runs.csv``: a finished trial's rows (read back from its trial file, as a rebuild reads them) are
appended in one write. Labels are not made here: where L* is unknown they are settled by the writer
(:class:`study.search.labels.ConfigurationLabels`) before the trial file is written, so the trial files
carry final labels and a rebuild only concatenates them. Appending leaves ``runs.csv`` different from a
rebuild from the trial files in three ways, each noted when it happens: rows appended out of seed order
(trials finishing in parallel), earlier trials whose files were relabelled when their configuration's
best dropped (:meth:`HuntTables.relabelled`), and a column whose type differs between trials in a way
that changes how it is written (ints beside floats). When any was noted, :meth:`HuntTables.finish`
rebuilds the table from the trial files once at the end of the hunt, so a hunt ends with exactly the
``runs.csv`` of a full rebuild; a resumed hunt rebuilds once when it starts. A trial that brings a
column the table lacks, or a seed base already in it (a re-run), rebuilds it at once (rare: a table's
columns are fixed by its landscape and procedure).

``trials.csv``: one row appended per finished trial; rewritten from the study when a row brings a
column the table lacks (a first failure, a first class) and at the end (rows in trial order).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from study.record import CLASSES, append_csv, load_runs, migrate, trial_stem, write_csv, write_tables
from study.record.files import read_csv

# dtype kinds whose mix pandas writes differently once concatenated (3 becomes 3.0 beside a float)
_NUMERIC = {"i": "int", "u": "int", "f": "float"}


def _merge_kind(table: str, trial: str) -> str | None:
    """The kind of a column after concatenating a trial into the table; None when the trial's values
    would be written differently from the rebuild (an int column beside a float one)."""
    if table == trial:
        return table
    if table in _NUMERIC and trial in _NUMERIC and _NUMERIC[table] != _NUMERIC[trial]:
        return None
    return "O"


class HuntTables:
    """``runs.csv`` and ``trials.csv`` of one hunt folder, for the writer's thread only.

    ``trials`` reads the study's trials table (:func:`study.search.hunt_study.trials_table`); it is
    called only on rebuilds, never per trial.
    """

    def __init__(self, out: Path, trials: Callable[[], pd.DataFrame]) -> None:
        self.out, self._trials = out, trials
        self.runs_path, self.trials_path = out / "runs.csv", out / "trials.csv"
        self._seed_bases: set[int] = set()
        self._columns: list[str] = []  # runs.csv's header ([]: no runs.csv yet)
        self._kinds: dict[str, str] = {}
        self._last_stem = ""
        self._trial_columns: list[str] = []
        self.exact = True  # runs.csv equals a rebuild from the trial files
        self.rebuilds = 0

    # ---- whole tables ------------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Both tables from the trial files and the study (the reference the appends must equal), and
        the state kept between trials from them."""
        runs = load_runs(self.out)
        trials = self._trials()
        self._columns, self._last_stem, self._kinds = list(runs.columns), "", {}
        self._seed_bases = set()
        if len(runs):
            self._seed_bases = {int(s) for s in runs["seed_base"].unique()}
            self._last_stem = max(trial_stem(s) for s in self._seed_bases)
            written = write_tables(self.out, trials, runs=runs)  # the trial files carry final labels
            self._kinds = {c: written[c].dtype.kind for c in written.columns}
        elif len(trials):
            write_csv(trials, self.trials_path)
        self._trial_columns = list(trials.columns)
        self.exact = True
        self.rebuilds += 1

    def finish(self) -> None:
        """At the end of a hunt: ``runs.csv`` rebuilt if an append left it different from a rebuild,
        ``trials.csv`` rewritten in trial order."""
        if not self.exact:
            self.rebuild()
            return
        trials = self._trials()
        if len(trials):
            write_csv(trials, self.trials_path)
            self._trial_columns = list(trials.columns)

    # ---- one trial ---------------------------------------------------------------------------------
    def add_runs(self, trial_csv: Path) -> None:
        """Append the runs of a trial whose files were just saved."""
        read = read_csv(trial_csv)
        if read is None or not len(read):
            return
        frame = migrate(read)
        seed_base = int(frame["seed_base"].iloc[0])
        if not self._columns or seed_base in self._seed_bases or set(frame.columns) - set(self._columns):
            if self._columns or self.runs_path.exists() or self._seed_bases:
                self.rebuild()  # a re-run of a trial in the table, or a column it lacks
                return
            self._columns = list(frame.columns)  # the first trial of a fresh hunt
            self._kinds = {c: frame[c].dtype.kind for c in frame.columns}
        self._seed_bases.add(seed_base)
        self._note_kinds(frame)
        stem = trial_stem(seed_base)
        if stem < self._last_stem:
            self.exact = False  # the rebuild orders trials by their files' names
        self._last_stem = max(stem, self._last_stem)
        rows = frame.reindex(columns=self._columns)
        if self.runs_path.exists():
            append_csv(rows, self.runs_path)
        else:
            write_csv(rows, self.runs_path)

    def relabelled(self, seed_bases: list[int]) -> None:
        """Earlier trials whose files were rewritten with new labels (their configuration's best dropped):
        their rows in ``runs.csv`` are stale until the rebuild at the end."""
        if any(s in self._seed_bases for s in seed_bases):
            self.exact = False

    def add_trial(self, row: dict[str, Any]) -> None:
        """Append a finished trial's row (see :func:`study.search.hunt_study.trial_row`)."""
        if not self._trial_columns or set(row) - set(self._trial_columns) or not self.trials_path.exists():
            trials = self._trials()
            write_csv(trials, self.trials_path)
            self._trial_columns = list(trials.columns)
            return
        full = {c: row.get(c, 0 if c in CLASSES else None) for c in self._trial_columns}
        append_csv(pd.DataFrame([full], columns=self._trial_columns), self.trials_path)

    # ---- state kept between trials -------------------------------------------------------------------
    def _note_kinds(self, frame: pd.DataFrame) -> None:
        for column in self._columns:
            kind = frame[column].dtype.kind if column in frame.columns else "f"  # missing: NaN
            merged = _merge_kind(self._kinds.get(column, kind), kind)
            if merged is None:
                self.exact = False
            self._kinds[column] = merged or "f"


@dataclass
class TrialTiming:
    """The driver's work on one finished trial, in seconds: from its results arriving to its tell and
    tables done (``seconds``), of which waiting for the writer's thread to finish earlier trials
    (``queued``), the rest its own work (``work``: files, MLflow, tell, tables), and the tables'."""

    trial: int
    seconds: float
    queued: float
    work: float
    tables: float


class Stopwatch:
    """Per-trial timings kept by the writer (a few numbers per trial), and seconds summed per stage of
    the hunt's account (:mod:`study.reports.account`), added from the driver's and the writer's threads."""

    def __init__(self) -> None:
        self.timings: list[TrialTiming] = []
        self.stages: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage``."""
        with self._lock:
            self.stages[stage] = self.stages.get(stage, 0.0) + float(seconds)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Time the enclosed block into ``stage``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def record(self, trial: int, arrived: float, started: float, tables_started: float) -> None:
        now = time.perf_counter()
        self.timings.append(
            TrialTiming(trial, now - arrived, started - arrived, now - started, now - tables_started)
        )

    def frame(self) -> pd.DataFrame:
        columns = ["trial", "seconds", "queued", "work", "tables"]
        return pd.DataFrame([[getattr(t, c) for c in columns] for t in self.timings], columns=columns)
