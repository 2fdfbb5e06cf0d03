"""Chunks sized by measured work: the pool's arithmetic, and a real trial split into smaller chunks
giving the same runs as one chunk (Ray local)."""

from __future__ import annotations

import numpy as np

from study.dispatch import ray_pool
from study.dispatch.pool import ChunkPool
from study.runs import RunSpec, run_replicas
from study.spec_fields import Resources
from study.training.gd import TrainConfig


def _pool(chunk_size: int) -> ChunkPool:
    cluster = ray_pool.ClusterInfo(address="local", cpus=2, gpus=0.0)
    return ChunkPool(cluster, chunk_size, 4, Resources(device="cpu"), _now=cluster)


def test_chunks_follow_the_measured_seconds_per_run_up_to_chunk_size():
    pool = _pool(250)
    assert pool.chunk_runs(1000) == 250 and pool.chunk_runs(100) == 100  # nothing measured yet
    pool._per_run = [0.01, 1.0, 0.5]  # the slowest of the latest chunks: 1 s per run
    assert pool.chunk_runs(100) == 20  # 20 s per chunk
    assert pool.chunk_runs(30) == 15  # 2 chunks of 15, not 20 + 10
    pool._per_run = [0.3]
    assert pool.chunk_runs(100) == 50  # 66 fit in 20 s: 2 even chunks
    pool._per_run = [1e-4]
    assert pool.chunk_runs(1000) == 250  # cheap runs: chunk_size caps the chunk
    pool._per_run = [100.0]
    assert pool.chunk_runs(7) == 1  # a run longer than the target: one per chunk


def test_a_trial_split_by_measured_work_gives_the_runs_of_one_chunk(ray_local):
    spec = RunSpec("teacher_student", {"k": 3, "n": 3}, train=TrainConfig(tol=1e-7, max_steps=20000))
    seeds = [11, 12, 13, 14]
    pool = ChunkPool.start(
        address=None, num_cpus=None, runs_per_trial=4, chunk_size=4, resources=Resources(device="cpu")
    )
    pool.submit("measured", spec, seeds)
    assert len(pool._pending) == 1
    while pool.busy:
        pool.wait(timeout=30)
    assert len(pool._per_run) == 1 and pool._per_run[0] > 0
    pool.chunk_seconds = pool._per_run[0] / 10  # runs now "slow": one per chunk
    pool.submit("split", spec, seeds)
    assert len(pool._pending) == 4
    finished = []
    while pool.busy:
        finished += pool.wait(timeout=30).finished
    ((key, batches),) = finished
    assert key == "split" and len(batches) == 4
    split = np.concatenate([b.frame["loss"].to_numpy() for b in batches])
    whole = run_replicas(spec, seeds).frame["loss"].to_numpy()
    np.testing.assert_allclose(split, whole, rtol=1e-10, atol=1e-14)
