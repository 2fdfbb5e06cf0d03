"""Shared test set-up: telemetry off, small thread counts (the CI machine has 2 cores)."""

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance on 127.0.0.1 (2 CPUs) for the whole session; stopped at the end."""
    from study.dispatch import ray_pool

    info = ray_pool.init_ray(None, num_cpus=2)
    yield info
    ray_pool.shutdown()
