"""`study bench tracking`: what logging a trial's runs to MLflow costs per run, everything the tracker does
per run included (params, metrics, tags, loss curve, description, counterexample artifacts and the
trial's family plot).

Trains one trial of the Safran 2021 protocol at k = n = 20 (``pipelines/safran_2021.yaml``; about 95% of
its runs are certified spurious minima, so nearly every run gets artifacts), then logs it with each run
writer of :mod:`study.tracking.writers` through :class:`study.tracking.mlflow_sink.HuntTracker`: ``sql``
into a fresh SQLite store (what a hunt on a local store does), and ``api`` through a real ``mlflow
server`` on 127.0.0.1 (SQLite backend, proxied artifacts). Each store first logs a 10-run trial (imports,
compiled statements, the server's first requests), not counted. The last line gives the SQL writer's
time: ``logging: X.XX ms per run``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from study.record import RunBatch
from study.runs import run_replicas
from study.spec import parse_pipeline
from study.telemetry import TELEMETRY_OFF
from study.tracking.mlflow_sink import HuntTracker

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "safran_2021.yaml"
K = 20
WARM_RUNS = 10


def main(*, runs: int = 1000) -> int:
    import study.reports.plots  # noqa: F401 - matplotlib's import, paid once per hunt, not per trial

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per run over HTTP

    spec = parse_pipeline(yaml.safe_load(PIPELINE.read_text()), source=str(PIPELINE))
    values = spec.resolve({"k": K})
    run_spec = spec.run_spec(values)
    started = time.perf_counter()
    batch = run_replicas(run_spec, list(range(runs)))
    trained = time.perf_counter() - started
    counts = batch.frame["critical_point"].value_counts().to_dict()
    certified = int((batch.frame["critical_point"].eq("spurious_minimum") & batch.frame["certified"]).sum())
    print(
        f"tracking benchmark: one trial of {runs} runs, Safran 2021 protocol at k = n = {K} "
        f"(trained and diagnosed in {trained:.1f} s; {counts}; {certified} certified spurious minima)"
    )
    config = run_spec.flat_config()
    per_run = {}
    with tempfile.TemporaryDirectory() as tmp:
        with _MlflowServer(Path(tmp) / "server") as url:
            per_run["api"] = _log(url, "api", batch, values, config, Path(tmp) / "api")
        per_run["sql"] = _log(f"sqlite:///{Path(tmp) / 'mlflow.db'}", "sql", batch, values, config, Path(tmp))
    print(f"api writer through mlflow server: {per_run['api']:.2f} ms per run")
    print(f"sql writer into SQLite: {per_run['sql']:.2f} ms per run (load average {os.getloadavg()[0]:.2f})")
    print(f"logging: {per_run['sql']:.2f} ms per run")
    return 0


def _log(
    uri: str, writer: str, batch: RunBatch, values: dict[str, Any], config: dict[str, Any], root: Path
) -> float:
    """Milliseconds per run the tracker spends logging ``batch`` as one trial (after a warm-up trial)."""
    local = None if uri.startswith("http") else root / "art"  # a server proxies artifacts, as in a hunt
    tracker = HuntTracker(uri, "bench_tracking", "bench", artifact_root=local, writer=writer)
    tracker.start_hunt({"runs": len(batch.frame)})
    warm = _rows(batch, range(WARM_RUNS))
    tracker.log_runs(
        tracker.trial_run(0, 0, values), warm, seed_base=0, trial_number=0, values=values, config=config
    )
    tracker.seconds, tracker.runs_logged = 0.0, 0
    trial = tracker.trial_run(1, 1, values)
    tracker.log_runs(trial, batch, seed_base=1, trial_number=1, values=values, config=config)
    return 1000 * tracker.seconds / max(1, tracker.runs_logged)


def _rows(batch: RunBatch, rows: range) -> RunBatch:
    index = list(rows)
    return RunBatch(
        frame=batch.frame.iloc[index].reset_index(drop=True),
        theta=batch.theta[index],
        theta0=batch.theta0[index],
        eigenvalues=batch.eigenvalues[index],
        curve_steps=batch.curve_steps,
        curve=batch.curve[index],
        train_span=batch.train_span[index],
    )


class _MlflowServer:
    """`mlflow server` on a free loopback port (SQLite backend, artifacts proxied to ``folder``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> str:
        self.folder.mkdir(parents=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            *("server", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}"),
            *("--artifacts-destination", str(self.folder / "artifacts")),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ]
        self.log = open(self.folder / "server.log", "w")  # noqa: SIM115 - closed in __exit__
        self.server = subprocess.Popen(
            command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **TELEMETRY_OFF},
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.read().strip() == b"OK":
                        return url
            except OSError:
                pass
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not come up: {(self.folder / 'server.log').read_text()}"
                )
            time.sleep(0.5)

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.server.pid, 15)
        try:
            self.server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, 9)
            self.server.wait(timeout=10)
        self.log.close()
