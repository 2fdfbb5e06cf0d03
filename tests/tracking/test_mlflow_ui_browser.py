"""The counterexamples link in a real browser: a small hunt with re-verified spurious minima (k = n = 8),
`mlflow ui` on 127.0.0.1, the link that `study hunt` printed opened in headless Chromium with a fresh
profile; the page is MLflow's model-training view (not GenAI), its runs table lists exactly the
counterexamples with the columns a reviewer compares, and each run lasts its training time.

Needs Debian's `chromium` (`make browser` installs it); skipped with that reason when it is missing.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from study.cli import main
from study.telemetry import TELEMETRY_OFF
from study.tracking.mlflow_sink import default_tracking_uri
from tests.cluster.conftest import free_port, stop_process_group, wait_for_mlflow

PIPELINE = {
    "name": "browser_hunt",
    "landscape": "teacher_student",
    "search": {"k": {"type": "int", "low": 8, "high": 8}},
    "derived": {"n": "k"},
    "train": {"lr": 0.1, "tol": 1.0e-9, "max_steps": 20000, "newton_polish": True},
    "runs_per_trial": 12,  # 3 re-verified spurious minima and 9 global ones with these seeds
    "chunk_size": 12,
    "sampler": "grid",
    "trials": 1,
}


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def mlflow_ui(tmp_path):
    """Start `mlflow ui` on a free loopback port over a store; yields (start, url); stops it after."""
    started: list[subprocess.Popen] = []
    log_path = tmp_path / "mlflow-ui.log"

    def start(tracking_uri: str) -> str:
        port = free_port()
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "ui",
            "--backend-store-uri",
            tracking_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        env = {**os.environ, **TELEMETRY_OFF}
        with open(log_path, "w") as log:
            server = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        started.append(server)
        url = f"http://127.0.0.1:{port}"
        wait_for_mlflow(server, url, log_path, "mlflow ui")
        return url

    yield start
    for server in started:
        stop_process_group(server)


def headless(url: str, profile: Path, budget_ms: int, output: str) -> str:
    """Run headless Chromium in a fresh profile on ``url`` for ``budget_ms`` of virtual time with one
    output flag (``--dump-dom``, ``--screenshot=PATH``); returns its standard output."""
    command = [
        str(chromium()),
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1920,1000",  # wide enough that the table renders every chosen column
        f"--virtual-time-budget={budget_ms}",
        output,
        url,
    ]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True).stdout


def rendered_text(url: str, profile: Path, budget_ms: int) -> str:
    """The page's visible text after its scripts ran for ``budget_ms`` of virtual time, in a fresh
    headless Chromium profile."""
    dom = headless(url, profile, budget_ms, "--dump-dom")
    text = re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return re.sub(r"\s+", " ", text)


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium: run `make browser`")
def test_printed_link_opens_the_counterexamples_in_a_fresh_browser(tmp_path, ray_local, mlflow_ui, capsys):
    pipeline = tmp_path / "browser_hunt.yaml"
    pipeline.write_text(yaml.safe_dump(PIPELINE))
    out = tmp_path / "hunt"
    assert main(["hunt", str(pipeline), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    link = re.search(r"^counterexamples: (\S+)$", printed, flags=re.M)
    assert link is not None, printed

    client = MlflowClient(tracking_uri=default_tracking_uri(out))
    experiment = client.get_experiment_by_name("browser_hunt")
    training = client.search_runs(
        [experiment.experiment_id], "tags.`minima_hunt.kind` = 'run'", max_results=1000
    )
    wanted = {  # the re-verified counterexamples
        r.info.run_name
        for r in training
        if r.data.tags.get("verdict") in ("confirmed", "contradiction_candidate")
    }
    assert "viewStateShareKey=" in link.group(1) and "workflowType=machine_learning" in link.group(1)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    for run in training:  # a chunk's 12 replicas train together: each run lasts its chunk's training
        lasted = (run.info.end_time - run.info.start_time) / 1000
        assert lasted > 0 and lasted == pytest.approx(
            12 * float(run.data.params["train_seconds_per_run"]), abs=2e-3
        )
    others = {r.info.run_name for r in training} - wanted
    assert wanted and others, "the hunt must find counterexamples and other runs"

    base = mlflow_ui(default_tracking_uri(out))
    # the printed link names the default port; the test's server listens on a free one
    url = re.sub(r"^http://127\.0\.0\.1:5000", base, link.group(1))
    assert url != link.group(1)
    count = re.compile(rf"\b{len(wanted)} matching runs?\b")
    for attempt, budget in enumerate((20_000, 60_000)):  # a busy machine renders slowly
        text = rendered_text(url, tmp_path / f"profile-{attempt}", budget)
        if count.search(text):
            break
    assert count.search(text), text[:3000]
    listed = {name for name in wanted | others if re.search(re.escape(name) + r"(?![\w.])", text)}
    assert listed == wanted  # every counterexample, flat (not folded under its trial), and nothing else
    # the model-training view: its side bar (Runs, Models), not GenAI's (Overview, Evaluation, Training runs)
    assert re.search(r"\bRuns Models Traces Model registry\b", text), text[:3000]
    assert not re.search(r"\bEvaluation|\bTraining runs\b|\bOverview\b", text), text[:3000]
    # the columns a reviewer compares, in the table's header, and none of the defaults it replaced
    header = text[text.index("Run Name") : min(text.index(name) for name in wanted)]
    for column in ("trial.k", "trial.n", "loss", "loss_gap", "lambda_min", "verdict", "Duration"):
        assert re.search(rf"(?<![\w.]){re.escape(column)}(?![\w.])", header), (column, header)
    assert not re.search(r"\b(Source|Models|Dataset|User)\b", header), header
    screenshot = tmp_path / "counterexamples.png"
    headless(url, tmp_path / "profile-shot", 20_000, f"--screenshot={screenshot}")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
