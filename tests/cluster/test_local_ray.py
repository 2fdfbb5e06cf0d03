"""Neighbours on one machine: local Ray nodes take only ports the OS picked, never Ray's fixed ones;
two hunts started at once both finish; a node dies with the process that started it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml

from study.dispatch import local_ray
from tests.cluster.conftest import tiny_pipeline

ROOT = Path(__file__).resolve().parents[2]


def listening_ports(node: local_ray.LocalNode) -> set[int]:
    """TCP ports that processes of the node's session listen on (from /proc: Linux)."""
    inodes: set[str] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(pid)) != node.process.pid:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # gone, or not ours to read
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def group_alive(sid: int) -> bool:
    """Whether any process of the node's session is left."""
    return bool(local_ray.session_pids(sid))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads listening sockets from /proc")
def test_two_heads_at_once_share_no_port_and_avoid_rays_fixed_ones():
    def start(_: int) -> local_ray.LocalNode:  # not tied to the thread that starts it (it ends first)
        return local_ray.start_head(num_cpus=1, job_api=True, die_with_parent=False)

    with ThreadPoolExecutor(2) as pool:
        heads = list(pool.map(start, range(2)))
    try:
        deadline = time.monotonic() + 60  # the agents bind their ports a little after `ray start` returns
        while True:
            ports = [listening_ports(h) for h in heads]
            if all(len(p) >= 6 for p in ports) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert all(len(p) >= 6 for p in ports), ports  # GCS, raylet, agents, job API... all found
        assert not ports[0] & ports[1]
        assert not (ports[0] | ports[1]) & set(local_ray.RAY_FIXED_PORTS)
        assert heads[0].gcs_address != heads[1].gcs_address
        assert heads[0].auth_env["RAY_AUTH_TOKEN"] != heads[1].auth_env["RAY_AUTH_TOKEN"]
    finally:
        for head in heads:
            head.stop()
    for head in heads:
        assert not group_alive(head.process.pid) and not head.temp_dir.exists()


def test_a_local_head_dies_with_the_driver_that_started_it(tmp_path):
    script = (
        "import time\n"
        "from study.dispatch import ray_pool\n"
        "ray_pool.init_ray(None, num_cpus=1)\n"
        "print(ray_pool._LOCAL[0].process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
    )
    try:
        assert driver.stdout is not None
        pgid = int(driver.stdout.readline())
        assert group_alive(pgid)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.monotonic() + 30
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not group_alive(pgid)
    finally:
        if driver.poll() is None:
            driver.kill()


@pytest.mark.slow  # two local Ray instances and two hunts at once: minutes on a 2-core machine
def test_two_local_hunts_started_at_once_both_finish(tmp_path):
    procs = []
    for name in ("left", "right"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tiny_pipeline(name, trials=1)))
        command = [sys.executable, "-m", "study.cli", "hunt", str(path), "--out", str(tmp_path / name)]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-3000:]
    for name in ("left", "right"):
        runs = pd.read_csv(tmp_path / name / "runs.csv")
        assert len(runs) == 4 and runs["seed"].is_unique


def test_a_node_that_does_not_come_up_leaves_no_folder_behind():
    # Ray refuses CPU as a custom resource: `ray start` exits at once, on every retry
    with pytest.raises(local_ray.LocalRayError) as info:
        local_ray.start_head(resources={"CPU": 1}, timeout=60)
    message = str(info.value)
    assert "cannot be a custom resource" in message  # the log's tail is in the message
    folders = re.findall(r"/tmp/mh-ray-[^\s)]+", message)
    assert folders and not any(Path(f).exists() for f in folders)
