"""Static checks of the cluster infrastructure files under infra/."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from study.telemetry import TELEMETRY_OFF

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

CPU_IMAGE = "minima-hunt:0.1.0"
GPU_IMAGE = "minima-hunt:0.1.0-cuda"
PROJECT_IMAGES = {CPU_IMAGE, GPU_IMAGE}
APP_ENV = ("MLFLOW_TRACKING_URI", "MINIMA_HUNT_STORAGE")

YAML_FILES = sorted(INFRA.rglob("*.yaml")) + sorted(INFRA.rglob("*.yml"))


def load(relpath: str) -> list[dict]:
    with open(INFRA / relpath, encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def one(relpath: str, kind: str) -> dict:
    docs = [d for d in load(relpath) if d.get("kind") == kind]
    assert len(docs) == 1, f"{relpath}: expected one {kind}, found {len(docs)}"
    return docs[0]


def k8s_env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def image_name(ref: str) -> str:
    """`registry.example/minima-hunt:0.1.0` -> `minima-hunt:0.1.0`."""
    return ref.rsplit("/", 1)[-1]


def ray_cluster_groups(spec: dict) -> dict[str, dict]:
    """Pod specs of a RayCluster spec, keyed `head` and by worker group name."""
    groups = {"head": spec["headGroupSpec"]["template"]["spec"]}
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] not in groups
        groups[group["groupName"]] = group["template"]["spec"]
    return groups


def ray_container(pod_spec: dict) -> dict:
    # KubeRay runs Ray in the first container.
    return pod_spec["containers"][0]


def cluster_specs() -> list[tuple[str, dict]]:
    return [
        ("raycluster.yaml", one("k8s/raycluster.yaml", "RayCluster")["spec"]),
        ("rayjob.yaml", one("k8s/rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"]),
    ]


# --------------------------------------------------------------------------- all


def test_infra_has_the_expected_files():
    expected = [
        "ray/cluster.yaml",
        "k8s/raycluster.yaml",
        "k8s/rayjob.yaml",
        "k8s/tracking.yaml",
        "docker/Dockerfile",
        "docker/Dockerfile.cuda",
        "docker/init-db.sql",
        "compose.yaml",
        "README.md",
    ]
    missing = [p for p in expected if not (INFRA / p).is_file()]
    assert not missing


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_yaml_parses(path: Path):
    with open(path, encoding="utf-8") as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


def test_every_k8s_container_disables_telemetry():
    seen = 0
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            for container in _k8s_containers(doc):
                seen += 1
                env = k8s_env(container)
                for name, value in TELEMETRY_OFF.items():
                    assert env.get(name) == value, (path.name, container["name"], name)
    assert seen >= 8


def _k8s_containers(doc: dict):
    kind = doc.get("kind")
    if kind == "Deployment":
        yield from doc["spec"]["template"]["spec"]["containers"]
    elif kind == "RayCluster":
        for pod in ray_cluster_groups(doc["spec"]).values():
            yield from pod["containers"]
    elif kind == "RayJob":
        for pod in ray_cluster_groups(doc["spec"]["rayClusterSpec"]).values():
            yield from pod["containers"]
        yield from doc["spec"]["submitterPodTemplate"]["spec"]["containers"]


# ---------------------------------------------------------------- RayCluster / RayJob


@pytest.mark.parametrize("name,spec", cluster_specs(), ids=lambda x: x if isinstance(x, str) else "")
def test_ray_cluster_groups_images_and_gpu(name: str, spec: dict):
    assert spec["rayVersion"] == "2.60.0"
    groups = ray_cluster_groups(spec)
    assert {"head", "cpu", "gpu"} <= groups.keys(), name

    images = {g: image_name(ray_container(p)["image"]) for g, p in groups.items()}
    assert images["head"] == CPU_IMAGE
    assert images["cpu"] == CPU_IMAGE
    assert images["gpu"] == GPU_IMAGE

    gpu = ray_container(groups["gpu"])["resources"]
    assert int(gpu["limits"]["nvidia.com/gpu"]) >= 1
    for group in ("head", "cpu"):
        limits = ray_container(groups[group]).get("resources", {}).get("limits", {})
        assert "nvidia.com/gpu" not in limits, (name, group)

    head_params = spec["headGroupSpec"]["rayStartParams"]
    assert head_params["dashboard-host"] == "0.0.0.0"


@pytest.mark.parametrize("name,spec", cluster_specs(), ids=lambda x: x if isinstance(x, str) else "")
def test_ray_cluster_containers_carry_app_env(name: str, spec: dict):
    for group, pod in ray_cluster_groups(spec).items():
        env = k8s_env(ray_container(pod))
        for var in APP_ENV:
            assert env.get(var), (name, group, var)
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["MINIMA_HUNT_STORAGE"].startswith("postgresql+psycopg2://")
        assert env["MINIMA_HUNT_STORAGE"].endswith("@postgres:5432/optuna")


def test_rayjob_entrypoint_and_runtime_env():
    job = one("k8s/rayjob.yaml", "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["study", "hunt"]
    assert re.fullmatch(r"pipelines/[\w.-]+\.ya?ml", argv[2]), argv[2]
    assert argv[argv.index("--trials") + 1] == "20"

    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    env_vars = runtime_env["env_vars"]
    for var in APP_ENV:
        assert env_vars.get(var), var
    for var, value in TELEMETRY_OFF.items():
        assert env_vars.get(var) == value, var

    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert image_name(submitter["image"]) == CPU_IMAGE


def test_raycluster_and_rayjob_clusters_agree():
    (_, cluster), (_, job_cluster) = cluster_specs()
    assert cluster == job_cluster


# --------------------------------------------------------------------- tracking


def test_k8s_tracking_stack():
    docs = load("k8s/tracking.yaml")
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert {"postgres", "mlflow"} <= deployments.keys()
    assert services["postgres"]["spec"]["ports"][0]["port"] == 5432
    assert services["mlflow"]["spec"]["ports"][0]["port"] == 5000

    pg = deployments["postgres"]["spec"]["template"]["spec"]["containers"][0]
    assert pg["image"] == "postgres:16"

    mlflow = deployments["mlflow"]["spec"]["template"]["spec"]["containers"][0]
    assert image_name(mlflow["image"]) == CPU_IMAGE
    argv = mlflow["command"] + mlflow["args"]
    _check_mlflow_server_argv(argv, host="0.0.0.0")
    assert "mlflow:5000" in _opt(argv, "--allowed-hosts").split(",")

    init = one("k8s/tracking.yaml", "ConfigMap")["data"]["init-db.sql"]
    assert init == (INFRA / "docker" / "init-db.sql").read_text(encoding="utf-8")


def test_init_sql_creates_both_databases():
    sql = (INFRA / "docker" / "init-db.sql").read_text(encoding="utf-8")
    for db in ("mlflow", "optuna"):
        assert re.search(rf"CREATE DATABASE {db}\b", sql), db


def _opt(argv: list[str], flag: str) -> str:
    assert flag in argv, flag
    return argv[argv.index(flag) + 1]


def _check_mlflow_server_argv(argv: list[str], host: str) -> None:
    assert argv[:2] == ["mlflow", "server"]
    assert _opt(argv, "--backend-store-uri").startswith("postgresql+psycopg2://")
    assert _opt(argv, "--backend-store-uri").endswith("/mlflow")
    assert _opt(argv, "--artifacts-destination")
    assert "--serve-artifacts" in argv
    assert _opt(argv, "--host") == host
    assert _opt(argv, "--port") == "5000"


# ---------------------------------------------------------------------- compose


def test_compose_services():
    (compose,) = load("compose.yaml")
    services = compose["services"]
    assert {"postgres", "mlflow", "hunt"} <= services.keys()

    assert services["postgres"]["image"] == "postgres:16"
    assert any(
        v.startswith("./docker/init-db.sql:/docker-entrypoint-initdb.d/")
        for v in services["postgres"]["volumes"]
    )

    mlflow = services["mlflow"]
    assert image_name(mlflow["image"]) == CPU_IMAGE
    _check_mlflow_server_argv(mlflow["entrypoint"] + mlflow["command"], host="0.0.0.0")
    assert "mlflow:5000" in _opt(mlflow["command"], "--allowed-hosts").split(",")

    hunt = services["hunt"]
    assert image_name(hunt["image"]) == CPU_IMAGE
    assert hunt["command"][0] == "hunt"
    assert hunt["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert hunt["environment"]["MINIMA_HUNT_STORAGE"].startswith(
        "postgresql+psycopg2://optuna:optuna@postgres:5432/optuna"
    )


def test_compose_disables_telemetry_everywhere():
    (compose,) = load("compose.yaml")
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        assert isinstance(env, dict), name
        for var, value in TELEMETRY_OFF.items():
            assert env.get(var) == value, (name, var)


def test_compose_publishes_on_loopback_only():
    (compose,) = load("compose.yaml")
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):  # long syntax
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)
    assert published >= 2  # postgres and mlflow


# ------------------------------------------------------------------- cluster.yaml


def test_ray_cluster_launcher_config():
    (cfg,) = load("ray/cluster.yaml")
    docker = cfg["docker"]
    assert image_name(docker["image"]) == CPU_IMAGE
    assert docker["container_name"]

    run_options = " ".join(docker["run_options"])
    # The image's ENTRYPOINT is `study`; `docker run IMAGE bash` needs it reset.
    assert re.search(r"--entrypoint[ =]('')?(\s|$)", run_options)
    for var, value in TELEMETRY_OFF.items():
        assert f"--env {var}={value}" in run_options, var
    for var in APP_ENV:
        assert f"--env {var}=" in run_options, var

    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    gpu_types = {n: t for n, t in types.items() if t.get("resources", {}).get("GPU", 0) >= 1}
    cpu_types = {
        n: t for n, t in types.items() if n != cfg["head_node_type"] and not t.get("resources", {}).get("GPU")
    }
    assert gpu_types and cpu_types
    for name, node_type in gpu_types.items():
        assert image_name(node_type["docker"]["worker_image"]) == GPU_IMAGE, name
        assert node_type["resources"]["CPU"] >= 1
        assert node_type["max_workers"] >= 1
    for name, node_type in cpu_types.items():
        image = node_type.get("docker", {}).get("worker_image", docker["image"])
        assert image_name(image) == CPU_IMAGE, name
        assert node_type["max_workers"] >= 1, name

    assert cfg["setup_commands"]
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "ray start --head" in head_start
    assert "--dashboard-host=0.0.0.0" in head_start
    assert "--disable-usage-stats" in head_start
    worker_start = " ".join(cfg["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker_start
    assert "--disable-usage-stats" in worker_start


def test_ray_cluster_launcher_config_matches_ray_schema(monkeypatch):
    """Validate against the cluster-config schema of the installed (pinned) Ray."""
    util = pytest.importorskip("ray.autoscaler._private.util")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    (cfg,) = load("ray/cluster.yaml")
    util.validate_config(util.prepare_config(cfg))


# -------------------------------------------------------------------- Dockerfiles


def _dockerfile(name: str) -> tuple[str, list[str]]:
    text = (INFRA / "docker" / name).read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)  # join continuation lines
    lines = [ln.strip() for ln in logical.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return text, lines


@pytest.mark.parametrize(
    "name,torch_cmd",
    [
        ("Dockerfile", "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"),
        ("Dockerfile.cuda", "pip install torch==2.13.0"),
    ],
)
def test_dockerfile(name: str, torch_cmd: str):
    _, lines = _dockerfile(name)
    assert lines[0].startswith("FROM ")
    base = lines[0].split()[1]
    assert "2.60.0-py311" in base, base
    if name.endswith(".cuda"):
        assert base.endswith("-gpu") or "cuda" in base, base
    else:
        assert base.endswith("-cpu"), base

    runs = [ln for ln in lines if ln.startswith("RUN ")]
    torch_runs = [ln for ln in runs if "torch==" in ln]
    assert len(torch_runs) == 1
    assert re.search(rf"{re.escape(torch_cmd)}(\s|$)", torch_runs[0])
    if name.endswith(".cuda"):
        assert "--index-url" not in torch_runs[0]
    # install the project itself (non-editable), as `make install` does
    assert any(re.search(r"pip install \.(\s|$)", ln) for ln in runs)
    assert any(ln.startswith("COPY ") for ln in lines)

    entrypoints = [ln for ln in lines if ln.startswith("ENTRYPOINT ")]
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0][len("ENTRYPOINT ") :]) == ["study"]

    env_text = " ".join(ln for ln in lines if ln.startswith("ENV "))
    for var, value in TELEMETRY_OFF.items():
        assert f"{var}={value}" in env_text, var


def test_dockerignore_keeps_the_venv_out():
    for name in ("Dockerfile", "Dockerfile.cuda"):
        ignore = (INFRA / "docker" / f"{name}.dockerignore").read_text(encoding="utf-8").split()
        assert ".venv" in ignore and ".git" in ignore, name


def test_project_images_only():
    """Every image reference is a project image or a pinned third-party one."""
    refs: list[str] = []
    for path in YAML_FILES:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            refs.extend(_find_images(doc))
    assert refs
    for ref in refs:
        name = image_name(ref)
        if name.startswith("minima-hunt"):
            assert name in PROJECT_IMAGES, ref
        else:
            assert ref == "postgres:16", ref


def _find_images(node) -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("image", "worker_image", "head_image") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_find_images(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_find_images(item))
    return found
