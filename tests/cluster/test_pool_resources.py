"""The pool's concurrency follows what Ray reports while a hunt runs: a worker node that joins the
session's local cluster raises it, the same node lost lowers it again."""

from __future__ import annotations

import time

from study.dispatch import local_ray, ray_pool
from study.dispatch.pool import ChunkPool
from study.spec_fields import Resources


def settle(pool: ChunkPool, want: int, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    while pool.max_inflight != want and time.monotonic() < deadline:
        time.sleep(0.5)
    return pool.max_inflight


def test_trials_in_flight_follow_nodes_joining_and_leaving(ray_local):
    pool = ChunkPool.start(
        address=None, num_cpus=None, runs_per_trial=2, chunk_size=2, resources=Resources(device="cpu")
    )
    pool.refresh_seconds = 0.0
    cpus = ray_pool.cluster_now().cpus
    assert pool.max_inflight == cpus + 1  # one chunk per trial: a trial per CPU, one more queued
    head = ray_pool._LOCAL[0]
    worker = local_ray.start_worker(head, num_cpus=2)
    try:
        assert settle(pool, cpus + 3) == cpus + 3
        worker.kill()  # lost, not stopped: Ray notices by itself
        assert settle(pool, cpus + 1) == cpus + 1
    finally:
        worker.stop()
