import pytest

from study.dispatch import ray_pool


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance on 127.0.0.1 for the whole session; stopped at the end."""
    info = ray_pool.init_ray(None, num_cpus=2)
    yield info
    ray_pool.shutdown()
