"""``resources.device: cuda`` on a local Ray head that has GPUs: every chunk trains on the GPU Ray
assigned it (Ray sets CUDA_VISIBLE_DEVICES per task; the run record names the device).

No CPU twin here: what it checks is Ray's GPU assignment; the hunt on CPU is tested throughout
tests/cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

# a hunt needs Ray, MLflow and Optuna: the lent GPU image has none of them (`make gpu` skips this there)
for _module in ("ray", "mlflow", "optuna"):
    pytest.importorskip(_module, reason=f"a hunt needs {_module}, not installed on this machine")

from study.dispatch import local_ray  # noqa: E402
from tests.cluster.conftest import tiny_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


def test_a_cuda_hunt_runs_every_chunk_on_its_assigned_gpu(tmp_path):
    gpus = torch.cuda.device_count()
    head = local_ray.start_head(num_cpus=2, num_gpus=gpus)
    try:
        raw = tiny_pipeline("cuda", resources={"device": "cuda", "gpus_per_chunk": 0.5}, dtype="float64")
        path = tmp_path / "cuda.yaml"
        path.write_text(yaml.safe_dump(raw))
        env = {**os.environ, **head.auth_env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        out = tmp_path / "hunt"
        command = [sys.executable, "-m", "study.cli", "hunt", str(path), "--out", str(out)]
        proc = subprocess.run(
            [*command, "--address", head.gcs_address], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs = pd.read_csv(out / "runs.csv")
        assert len(runs) == raw["trials"] * raw["runs_per_trial"]
        assert runs["device"].str.startswith("cuda:").all()
    finally:
        head.stop()
