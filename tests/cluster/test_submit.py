"""`study submit / jobs / logs` against a real Ray head (its own temp dir, ports and token), and the job
definition they send."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from study.dispatch import local_ray
from study.dispatch.jobs import EXCLUDES, PIPELINE_ENV, default_results, hunt_job, project_root
from study.telemetry import TELEMETRY_OFF
from tests.cluster.conftest import free_port, silent_listener, tiny_pipeline

ROOT = Path(__file__).resolve().parents[2]
STUDY = [sys.executable, "-m", "study.cli"]


def study_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STUDY, *args], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)


# ---- the job definition ---------------------------------------------------------------------------
def test_hunt_job_carries_the_project_the_pipeline_text_and_the_stores(tmp_path):
    text = (
        "name: odd\n# quotes ' \" and $HOME and `ls` and \\n stay as they are\nlandscape: teacher_student\n"
    )
    job = hunt_job(
        "odd",
        text,
        working_dir=project_root(),
        tracking_uri="http://mlflow:5000",
        storage="postgresql+psycopg2://o:o@postgres:5432/optuna",
        trials=3,
        runs_per_trial=5,
    )
    assert project_root() == ROOT
    env = job.runtime_env["env_vars"]
    assert job.runtime_env["working_dir"] == str(ROOT)
    assert {".venv", ".git", "runs"} <= set(job.runtime_env["excludes"]) and EXCLUDES
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["MINIMA_HUNT_STORAGE"].startswith("postgresql+psycopg2://")
    assert TELEMETRY_OFF.items() <= env.items() and env[PIPELINE_ENV] == text
    assert job.submission_id.startswith("hunt-odd-")
    folder = str(default_results(job.submission_id))
    assert folder == str(Path.home() / "minima-hunt" / "jobs" / job.submission_id) == job.results
    prefix, hunt = job.entrypoint.split(' && exec "$py" ')
    assert hunt == (
        f"-m study.cli hunt {folder}/odd.yaml --address auto --out {folder} --trials 3 --runs-per-trial 5"
    )
    # the shell part writes the pipeline text byte for byte where the hunt reads it, and finds the
    # Python whose Ray its parent process loaded (here: this interpreter, which has imported Ray)
    import ray._raylet  # noqa: F401 - loaded here as in the job supervisor, the shell's parent

    results = tmp_path / "results"
    job = hunt_job("odd", text, working_dir=ROOT, results=results)
    prefix = job.entrypoint.split(' && exec "$py" ')[0]
    found = subprocess.run(
        ["sh", "-c", f'{prefix} && echo "$py"'],
        env={"PATH": "/usr/bin:/bin", PIPELINE_ENV: text},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found) == Path(sys.executable).parent / "python"
    assert (results / "odd.yaml").read_text() == text
    # without stores the job's own defaults apply (nothing is set for them)
    bare = hunt_job("odd", text, working_dir=ROOT)
    assert "MLFLOW_TRACKING_URI" not in bare.runtime_env["env_vars"]
    assert "--trials" not in bare.entrypoint


def test_cluster_commands_fail_in_one_line_with_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    closed = f"http://127.0.0.1:{free_port()}"
    for args in (("jobs", "--address", closed), ("logs", "some-job", "--address", closed), ("jobs",)):
        proc = study_cli(*args, env=env)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("study: error: "), proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**tiny_pipeline("bad"), "runs_per_trial": "four"}))
    proc = study_cli("submit", str(bad), "--address", closed, env=env)
    assert proc.returncode == 2 and "runs_per_trial" in proc.stderr  # validated before any connection


def test_submit_to_an_address_that_accepts_tcp_but_is_not_ray_fails_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(tiny_pipeline("silent")))
    with silent_listener() as port:  # Ray's job client waits on it without a timeout
        start = time.monotonic()
        proc = study_cli("submit", str(pipeline), "--address", f"http://127.0.0.1:{port}", env=env)
        seconds = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"study: error: cannot reach the Ray job API at http://127.0.0.1:{port}: no answer within 5 s"
    ]
    assert seconds < 15 and proc.stdout == ""


# ---- a real head --------------------------------------------------------------------------------
@pytest.fixture
def ray_head():
    """A head with its job API on 127.0.0.1: its own ports, temp dir and auth token; stopped at the end
    (its own process group: never `ray stop`, which would stop every Ray on the machine)."""
    from ray.job_submission import JobSubmissionClient

    # as a user who runs `.venv/bin/ray start --head` without activating the virtualenv: no Python of
    # the project on PATH (the job must find the head's own)
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != venv_bin
    )
    env = {**os.environ, **TELEMETRY_OFF, "PATH": path}
    env.pop("VIRTUAL_ENV", None)
    head = local_ray.start_head(num_cpus=2, job_api=True, env=env)
    env = {**env, **head.auth_env, **local_ray.loopback_env()}
    address = head.dashboard_address
    assert address is not None
    headers = {"authorization": f"Bearer {head.auth_env['RAY_AUTH_TOKEN']}"}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client = JobSubmissionClient(address, headers=headers)
                break
            except Exception:  # not up yet: connection refused, 5xx while the job module starts
                if not head.alive() or time.monotonic() > deadline:
                    pytest.fail(f"the Ray head did not come up:\n{head.log_path.read_text()[-5000:]}")
                time.sleep(1)
        yield address, client, env, head
    finally:
        head.stop()


@pytest.mark.timeout(300)
def test_submit_runs_a_hunt_as_a_ray_job_whose_results_outlive_the_head(tmp_path, ray_head):
    address, client, env, head = ray_head
    pipeline = tiny_pipeline("submitted", trials=1)  # --trials 2 below must win
    path = tmp_path / "tiny.yaml"  # outside the project: its text travels with the job
    path.write_text(yaml.safe_dump(pipeline))
    env = {k: v for k, v in env.items() if k not in ("MLFLOW_TRACKING_URI", "MINIMA_HUNT_STORAGE")}
    proc = study_cli(
        "submit", str(path), "--address", address, "--results", str(tmp_path / "results"), "--trials", "2",
        env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().splitlines()[-1]
    assert job_id.startswith(f"hunt-{pipeline['name']}-")
    results = tmp_path / "results" / job_id
    assert f"results: {results} on the head" in proc.stderr.splitlines()

    deadline = time.monotonic() + 240
    status = ""
    while time.monotonic() < deadline:
        status = str(client.get_job_status(job_id).value)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert status == "SUCCEEDED", f"job {job_id} ended {status or 'not in time'}:\n{logs[-8000:]}"

    listed = study_cli("jobs", "--address", address, env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(job_id))
    assert "SUCCEEDED" in row and "-m study.cli hunt" in row and "--address auto" in row
    printed = study_cli("logs", job_id, "--address", address, env=env)
    assert printed.returncode == 0 and f"hunt {pipeline['name']}" in printed.stdout
    unknown = study_cli("logs", "no-such-job", "--address", address, env=env)
    assert unknown.returncode == 2 and "no job 'no-such-job'" in unknown.stderr

    head.stop()  # `ray stop`: Ray's session directory, the job's working copy with it, is gone
    # the results stay where the submit said: 2 trials of 4 runs each
    storage = f"sqlite:///{results / 'optuna.db'}"
    study = optuna.load_study(study_name=pipeline["name"], storage=storage)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE"]
    mlflow = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name(pipeline["name"])
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id], "tags.`minima_hunt.kind` = 'run'", max_results=100)
    assert len(runs) == 8 and len({r.data.params["seed"] for r in runs}) == 8
    assert len(pd.read_csv(results / "runs.csv")) == 8
    assert (results / f"{pipeline['name']}.yaml").read_text() == path.read_text()
