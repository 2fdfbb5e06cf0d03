"""The GPU sweep command: its protocol from the pipeline file, its k order and run schedule, and a tiny
CPU run in a subprocess where Ray, MLflow, Optuna (and matplotlib, scikit-learn) cannot be imported,
whose folder `study sweep` and `study report` then read."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from study.bench.gpu_sweep import NEWTON_MAX_PARAMS, coarse_to_fine, protocol, runs_schedule, sweep
from study.cli import main

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "pipelines" / "safran_2021.yaml"
BLOCKED = ("ray", "mlflow", "optuna", "matplotlib", "sklearn")

# Runs `python -m study.cli ...` with the modules above made unimportable (a meta path finder first).
BLOCKING_MAIN = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked on the GPU image: " + name)
        return None
sys.meta_path.insert(0, Block())
from study.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_coarse_to_fine_visits_every_k_once_ends_first() -> None:
    order = coarse_to_fine(list(range(6, 101)))
    assert sorted(order) == list(range(6, 101))
    assert order[:6] == [6, 100, 22, 38, 54, 70]
    assert coarse_to_fine([3, 4]) == [3, 4]


def test_runs_schedule() -> None:
    runs = runs_schedule("40:500,70:200,100")
    assert (runs(6), runs(40), runs(41), runs(70), runs(71), runs(100)) == (500, 500, 200, 200, 100, 100)
    assert runs_schedule("7")(99) == 7
    for bad in ("x", "40:0", "40:a"):
        with pytest.raises(ValueError, match="--runs"):
            runs_schedule(bad)


def test_protocol_is_the_published_rule() -> None:
    raw = yaml.safe_load(PIPELINE.read_text())
    spec = protocol(raw, 20)
    assert spec.params == {"teacher": "identity", "k": 20, "n": 20}
    assert spec.train.lr == pytest.approx(5 / 20)
    # max_i |2 pi g_i| <= tol with tol = 2 pi 1e-12 / sqrt(n) implies |g| <= sqrt(n) max_i |g_i| <= 1e-12
    assert spec.train.tol * math.sqrt(20) / (2 * math.pi) == pytest.approx(1e-12)
    assert spec.train.newton_polish and spec.diagnostics.max_dense >= 400
    assert spec.init_scheme == "xavier-normal" and not spec.diagnostics.reverify
    big = protocol(raw, 60)
    assert NEWTON_MAX_PARAMS < 60 * 60 and not big.train.newton_polish
    assert big.diagnostics.max_dense == 3600  # every end point still gets its full spectrum


def test_the_command_imports_without_ray_mlflow_optuna() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = BLOCKING_MAIN.replace(
        "from study.cli import main\nsys.exit(main(sys.argv[1:]))",
        "import study.bench.gpu_sweep, study.cli\nstudy.cli.build_parser()\nprint('ok')",
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_in_process_sweep_writes_what_study_sweep_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = sweep(PIPELINE, [4], runs_schedule("2"), tmp_path, log=lambda _: None)
    assert list(table["k"]) == [4] and int(table["runs"].iloc[0]) == 2
    assert int(table["global_minimum"].iloc[0]) == 2  # k = n = 4 from Xavier init: always global here
    capsys.readouterr()
    assert main(["sweep", str(tmp_path)]) == 0
    assert "| 4 | 4 | 2 |" in capsys.readouterr().out  # k, n, runs


def test_tiny_sweep_without_ray_mlflow_optuna_is_read_by_sweep_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["gpu-sweep", str(PIPELINE), "--k", "4:5", "--runs", "3", "--device", "cpu", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-c", BLOCKING_MAIN, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "k = 4: 3 runs" in done.stdout and "k = 5: 3 runs" in done.stdout
    assert {p.name for p in (out / "trials").iterdir()} == {
        "trial-00000.csv",
        "trial-00000.npz",
        "trial-1000000.csv",
        "trial-1000000.npz",
    }
    capsys.readouterr()
    assert main(["sweep", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| 4 | 4 | 3 |" in table and "| 5 | 5 | 3 |" in table  # k, n, runs
    assert main(["sweep", str(out), "--grid"]) == 0
    assert main(["report", str(out), "--no-mlflow"]) == 0
    assert (out / "report" / "summary.md").is_file()
    # a second sweep into the same folder is refused, nothing written
    again = subprocess.run(
        [sys.executable, "-c", BLOCKING_MAIN, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert again.returncode == 2 and "--out" in again.stderr
