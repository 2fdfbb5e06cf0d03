"""Shared test set-up: telemetry off, small thread counts (the CI machine has 2 cores)."""

from study.telemetry import telemetry_off

telemetry_off()

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance on 127.0.0.1 (2 CPUs) for the whole session; stopped at the end."""
    from study.dispatch import ray_pool

    info = ray_pool.init_ray(None, num_cpus=2)
    yield info
    ray_pool.shutdown()
