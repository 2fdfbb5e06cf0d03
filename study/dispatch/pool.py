"""The hunt's worker pool: a trial's runs split into chunks, each a Ray task; a trial is done when all
its chunks are. The pool sizes how many trials are in flight so every CPU stays busy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from study.dispatch import ray_pool
from study.record import RunBatch
from study.runs import RunSpec

Key = TypeVar("Key")


@dataclass
class _Trial(Generic[Key]):
    key: Key
    refs: list[Any]
    done: int = 0


@dataclass
class ChunkPool(Generic[Key]):
    """Chunks of ``chunk_size`` runs on a Ray cluster (joined or started by :func:`ray_pool.init_ray`)."""

    cluster: ray_pool.ClusterInfo
    chunk_size: int
    gpu_fraction: float
    max_inflight: int
    _pending: dict[Any, tuple[_Trial[Key], int]] = field(default_factory=dict)  # ray ref -> trial, runs
    _trials: list[_Trial[Key]] = field(default_factory=list)

    @staticmethod
    def start(
        *,
        address: str | None,
        num_cpus: int | None,
        runs_per_trial: int,
        chunk_size: int,
        gpu_fraction: float,
        max_inflight: int = 0,
    ) -> ChunkPool[Any]:
        """Join or start Ray; ``max_inflight`` 0: enough trials in flight to keep every CPU busy."""
        cluster = ray_pool.init_ray(address, num_cpus=num_cpus)
        chunks_per_trial = math.ceil(runs_per_trial / chunk_size)
        inflight = max_inflight or max(2, math.ceil(cluster.cpus / chunks_per_trial) + 1)
        return ChunkPool(cluster, chunk_size, gpu_fraction, inflight)

    @property
    def has_room(self) -> bool:
        return len(self._trials) < self.max_inflight

    @property
    def busy(self) -> bool:
        return bool(self._trials)

    def submit(self, key: Key, spec: RunSpec, seeds: list[int]) -> None:
        """Submit a trial's runs as chunks of ``chunk_size`` seeds."""
        item = _Trial(key=key, refs=[])
        for start in range(0, len(seeds), self.chunk_size):
            chunk = seeds[start : start + self.chunk_size]  # the last one may be shorter
            ref = ray_pool.submit_chunk(
                spec, chunk, gpu_fraction=self.gpu_fraction, use_gpu=self.cluster.gpus > 0
            )
            item.refs.append(ref)
            self._pending[ref] = (item, len(chunk))
        self._trials.append(item)

    def wait(self, timeout: float = 5.0) -> tuple[int, list[tuple[Key, list[RunBatch] | BaseException]]]:
        """Wait for a chunk; returns (runs finished by the chunks that ended, trials now complete with
        their chunk results or the exception of the first chunk that failed)."""
        if not self._pending:
            return 0, []
        ready, _ = ray_pool.ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        finished: list[tuple[Key, list[RunBatch] | BaseException]] = []
        runs = 0
        for ref in ready:
            item, size = self._pending.pop(ref)
            runs += size
            item.done += 1
            if item.done == len(item.refs):
                self._trials.remove(item)
                finished.append((item.key, _gather(item.refs)))
        return runs, finished


def _gather(refs: list[Any]) -> list[RunBatch] | BaseException:
    try:
        return [ray_pool.ray.get(ref) for ref in refs]
    except Exception as exc:  # a failed chunk fails the trial, not the hunt
        return exc
