"""The hunt's worker pool: a trial's runs split into chunks, each a Ray task asking for the pipeline's
``resources``; a trial is done when all its chunks are. The pool keeps enough trials in flight to fill
what the cluster has *now* (read again every few seconds: nodes join and leave while a hunt runs).
Chunks are sized by measured work: at most ``chunk_size`` runs, and no more than the latest chunks'
seconds per run fit in ``CHUNK_SECONDS`` (so slow configurations spread over every core, and a hunt's
last trial does not leave cores idle behind one long chunk)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd

from study.dispatch import ray_pool
from study.record import RunBatch
from study.runs import RunSpec
from study.spec_fields import Resources

Key = TypeVar("Key")

# what the pool adds to the hunt's account (study.reports.account), in seconds
TASKS = "worker_tasks"  # on the workers' CPU slots: every chunk and follow-up task, whole
REVERIFY = "reverify"  # of it, re-verification (in a chunk, or a follow-up task)
DISPATCH = "dispatch"  # on the driver: submitting tasks and reading their results back
CHUNK_SECONDS = 20.0  # how long a chunk should last once its runs' cost has been measured
MEASURED_CHUNKS = 4  # chunks whose seconds per run size the next ones (the slowest of them)


def _ignore(stage: str, seconds: float) -> None:
    """The default timer: the seconds go nowhere."""


@dataclass
class _Trial(Generic[Key]):
    key: Key
    refs: list[Any]
    results: dict[int, RunBatch] = field(default_factory=dict)  # chunk index -> its runs
    error: BaseException | None = None  # of the first chunk that failed

    @property
    def done(self) -> int:
        return len(self.results) + (self.error is not None)

    def so_far(self) -> list[RunBatch]:
        return [self.results[i] for i in sorted(self.results)]

    def prefix(self) -> list[RunBatch]:
        """The finished chunks before the first unfinished one: the trial's first seeds, in seed order."""
        ended = 0
        while ended in self.results:
            ended += 1
        return [self.results[i] for i in range(ended)]


@dataclass(frozen=True)
class Waited(Generic[Key]):
    """What one :meth:`ChunkPool.wait` saw: runs finished by the chunks that ended, trials now complete
    (their chunk results or the first chunk's exception), and unfinished trials that gained a chunk
    (their finished chunks before the first unfinished one: a prefix of their seeds)."""

    runs: int
    finished: list[tuple[Key, list[RunBatch] | BaseException]]
    progressed: list[tuple[Key, list[RunBatch]]]


@dataclass
class ChunkPool(Generic[Key]):
    """Chunks of at most ``chunk_size`` runs on a Ray cluster (joined or started by
    :func:`ray_pool.init_ray`), smaller where measured runs are slow (:meth:`chunk_runs`)."""

    cluster: ray_pool.ClusterInfo  # as it was at the start
    chunk_size: int
    chunks_per_trial: int
    resources: Resources
    fixed_inflight: int = 0  # the pipeline's max_inflight; 0: follow the cluster
    refresh_seconds: float = 2.0
    timer: Callable[[str, float], None] = _ignore  # adds seconds to a stage of the hunt's account
    chunk_seconds: float = CHUNK_SECONDS
    _per_run: list[float] = field(default_factory=list)  # seconds per run of the latest chunks (tasks)
    _now: ray_pool.ClusterInfo | None = None
    _read_at: float = -math.inf
    _pending: dict[Any, tuple[_Trial[Key], int]] = field(default_factory=dict)  # ray ref -> trial, runs
    _trials: list[_Trial[Key]] = field(default_factory=list)

    @staticmethod
    def start(
        *,
        address: str | None,
        num_cpus: int | None,
        runs_per_trial: int,
        chunk_size: int,
        resources: Resources,
        max_inflight: int = 0,
        timer: Callable[[str, float], None] = _ignore,
    ) -> ChunkPool[Any]:
        """Join or start Ray; ``max_inflight`` 0: enough trials in flight to fill the cluster; ``timer``
        adds seconds to the hunt's account."""
        cluster = ray_pool.init_ray(address, num_cpus=num_cpus)
        chunks_per_trial = math.ceil(runs_per_trial / chunk_size)
        return ChunkPool(
            cluster, chunk_size, chunks_per_trial, resources, max_inflight, timer=timer, _now=cluster
        )

    def current(self) -> ray_pool.ClusterInfo:
        """The cluster's CPUs and GPUs as Ray reports them, read at most every ``refresh_seconds``."""
        if self._now is None or time.monotonic() - self._read_at > self.refresh_seconds:
            self._now = ray_pool.cluster_now()
            self._read_at = time.monotonic()
        return self._now

    @property
    def max_inflight(self) -> int:
        """Trials in flight: enough for every chunk that fits in the cluster now, one more to queue
        behind them, and at least two (an empty autoscaling cluster grows for waiting tasks)."""
        if self.fixed_inflight:
            return self.fixed_inflight
        now = self.current()
        fit = self.resources.chunks_that_fit(now.cpus, now.gpus)
        return max(2, math.ceil(fit / self.chunks_per_trial) + 1)

    @property
    def in_flight(self) -> int:
        """Trials with chunks submitted and not all ended."""
        return len(self._trials)

    @property
    def has_room(self) -> bool:
        return self.in_flight < self.max_inflight

    @property
    def busy(self) -> bool:
        return bool(self._trials)

    def chunk_runs(self, runs: int) -> int:
        """Seeds per chunk for a trial of ``runs``: ``chunk_size`` at most, fewer where the runs of the
        latest chunks (the slowest of the last ``MEASURED_CHUNKS``, in seconds per run of their whole
        task) would make a chunk last longer than ``chunk_seconds``; the trial's chunks as even as can be."""
        size = self.chunk_size
        if self._per_run and max(self._per_run) > 0:
            size = max(1, min(size, int(self.chunk_seconds / max(self._per_run))))
        return math.ceil(runs / math.ceil(runs / size)) if runs else size

    def submit(self, key: Key, spec: RunSpec, seeds: list[int]) -> None:
        """Submit a trial's runs as chunks of :meth:`chunk_runs` seeds."""
        begun = time.perf_counter()
        item = _Trial(key=key, refs=[])
        size = self.chunk_runs(len(seeds))
        for start in range(0, len(seeds), size):
            chunk = seeds[start : start + size]  # the last one may be shorter
            ref = ray_pool.submit_chunk(spec, chunk, self.resources, cluster_gpus=self.current().gpus)
            item.refs.append(ref)
            self._pending[ref] = (item, len(chunk))
        self._trials.append(item)
        self.timer(DISPATCH, time.perf_counter() - begun)

    def wait(self, timeout: float = 5.0) -> Waited[Key]:
        """Wait up to ``timeout`` seconds for a chunk to end."""
        if not self._pending:
            return Waited(0, [], [])
        ready, _ = ray_pool.ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        begun = time.perf_counter()
        finished: list[tuple[Key, list[RunBatch] | BaseException]] = []
        runs = 0
        progressed: dict[int, _Trial[Key]] = {}
        for ref in ready:
            item, size = self._pending.pop(ref)
            runs += size
            try:
                timed = ray_pool.ray.get(ref)
                self._per_run = [*self._per_run, timed.seconds / max(1, size)][-MEASURED_CHUNKS:]
                item.results[item.refs.index(ref)] = self._value(timed)
            except Exception as exc:  # a failed chunk fails the trial, not the hunt
                item.error = item.error or exc
            if item.done == len(item.refs):
                self._trials.remove(item)
                finished.append((item.key, item.error or item.so_far()))
                progressed.pop(id(item), None)
            elif item.error is None:
                progressed[id(item)] = item
        self.timer(DISPATCH, time.perf_counter() - begun)
        return Waited(runs, finished, [(t.key, t.prefix()) for t in progressed.values()])

    def _value(self, timed: ray_pool.Timed) -> Any:
        """A task's result, its seconds added to the account."""
        self.timer(TASKS, timed.seconds)
        self.timer(REVERIFY, timed.verify_seconds)
        return timed.value

    def cancel(self, key: Key) -> list[RunBatch]:
        """Stop a trial (pruned): its unfinished chunks are cancelled; returns the runs it finished."""
        item = next(t for t in self._trials if t.key is key)
        self._trials.remove(item)
        for index, ref in enumerate(item.refs):
            if index not in item.results and self._pending.pop(ref, None) is not None:
                ray_pool.ray.cancel(ref)
        return item.so_far()

    def verify(
        self, spec: RunSpec, frame: pd.DataFrame, theta: np.ndarray, theta0: np.ndarray
    ) -> pd.DataFrame:
        """Re-verify the rows of ``frame`` (aligned with ``theta, theta0: (R, P)``) as follow-up tasks of at
        most ``chunk_size`` runs, and wait for them; returns ``frame`` with the verdict columns. It reads
        no state of the pool, so the writer's thread may call it while the driver waits on chunks."""
        refs = [
            ray_pool.submit_verification(
                spec,
                frame.iloc[start : start + self.chunk_size],
                theta[start : start + self.chunk_size],
                theta0[start : start + self.chunk_size],
                self.resources,
            )
            for start in range(0, len(frame), self.chunk_size)
        ]
        if not refs:
            return frame
        return pd.concat([self._value(timed) for timed in ray_pool.ray.get(refs)])
