"""A pipeline's ``resources``: validated with field-named errors; what a chunk asks Ray for; how many
chunks fit in what the cluster has."""

import pytest

from study.spec import PipelineError, parse_pipeline
from study.spec_fields import Resources
from tests.cluster.conftest import TINY

PIPELINE = {"name": "res", **TINY}


def test_default_is_todays_single_machine_behaviour():
    spec = parse_pipeline(PIPELINE)
    assert spec.resources == Resources(device="auto", gpus_per_chunk=0.25, cpus_per_chunk=1.0)
    assert spec.resources.task_options(cluster_gpus=0) == {"num_cpus": 1.0}
    assert spec.resources.task_options(cluster_gpus=1) == {"num_cpus": 1.0, "num_gpus": 0.25}


def test_declared_resources_are_what_a_chunk_asks_for():
    spec = parse_pipeline(
        {**PIPELINE, "resources": {"device": "cuda", "gpus_per_chunk": 0.5, "cpus_per_chunk": 2}}
    )
    # cuda asks for its GPU share even where the cluster has no GPU yet (an autoscaler adds one)
    assert spec.resources.task_options(cluster_gpus=0) == {"num_cpus": 2.0, "num_gpus": 0.5}
    cpu = parse_pipeline({**PIPELINE, "resources": {"device": "cpu"}}).resources
    assert cpu.task_options(cluster_gpus=8) == {"num_cpus": 1.0}


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"device": "tpu"}, "resources.device: expected one of auto, cpu, cuda; got 'tpu'"),
        ({"gpus_per_chunk": 0}, "resources.gpus_per_chunk: must be in (0, 1] or a whole number, got 0.0"),
        ({"gpus_per_chunk": 1.5}, "resources.gpus_per_chunk: must be in (0, 1] or a whole number, got 1.5"),
        ({"gpus_per_chunk": "half"}, "resources.gpus_per_chunk: expected a number, got 'half'"),
        ({"cpus_per_chunk": -1}, "resources.cpus_per_chunk: must be > 0, got -1.0"),
        ({"cpus_per_chunk": True}, "resources.cpus_per_chunk: expected a number, got True"),
        ({"gpu": 1}, "resources: unknown field(s) ['gpu']"),
        ("cuda", "resources: expected a mapping"),
    ],
)
def test_bad_resources_name_the_field(resources, message):
    with pytest.raises(PipelineError) as info:
        parse_pipeline({**PIPELINE, "resources": resources})
    assert message in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_chunks_that_fit_follow_the_scarcer_resource():
    auto = Resources()
    assert auto.chunks_that_fit(cpus=8, gpus=0) == 8  # no GPU: CPUs decide
    assert auto.chunks_that_fit(cpus=8, gpus=1) == 4  # four quarter-GPU chunks on one GPU
    assert auto.chunks_that_fit(cpus=2, gpus=1) == 2
    cuda = Resources(device="cuda", gpus_per_chunk=0.5, cpus_per_chunk=2)
    assert cuda.chunks_that_fit(cpus=0, gpus=0) == 0  # an empty autoscaling cluster
    assert cuda.chunks_that_fit(cpus=16, gpus=2) == 4
    assert Resources(cpus_per_chunk=0.5).chunks_that_fit(cpus=3, gpus=0) == 6
