"""The `study certify` and `study train` contract: JSON keys, exit codes, one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

STUDY = [sys.executable, "-m", "study.cli"]


def run(*args, cwd=None):
    return subprocess.run([*STUDY, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_certify_global_minimum_json(tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.eye(5))
    proc = run("certify", str(path), "--k", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in (
        "loss",
        "grad_norm",
        "lambda_min",
        "lambda_max",
        "n_negative",
        "critical_point",
        "certified",
        "radius",
    ):
        assert key in out
    assert out["critical_point"] == "global_minimum"
    assert out["certified"] is True
    assert out["lambda_min"] == pytest.approx(0.25 - 1 / (2 * np.pi), abs=1e-9)


def test_certify_saddle(tmp_path):
    from tests.diagnostics.test_critical import symmetric_saddle

    _, theta = symmetric_saddle()
    path = tmp_path / "saddle.npy"
    np.save(path, theta.numpy().reshape(2, 2))
    out = json.loads(run("certify", str(path), "--k", "2", "--json").stdout)
    assert out["critical_point"] == "saddle" and out["n_negative"] == 1 and out["certified"] is False


@pytest.mark.parametrize(
    "array,message",
    [
        (np.zeros((3, 4)), "d=4 columns but the teacher needs d=3"),
        (np.zeros(9), "must be an (n, d) array"),
        (np.array([[1.0, np.nan, 0.0]] * 3), "NaN"),
    ],
)
def test_certify_bad_input_exits_2_with_one_line(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    proc = run("certify", str(path), "--k", "3", "--json")
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


def test_certify_missing_and_malformed_file(tmp_path):
    proc = run("certify", str(tmp_path / "nope.npy"), "--k", "3")
    assert proc.returncode == 2 and "not found" in proc.stderr
    garbage = tmp_path / "garbage.npy"
    garbage.write_text("not an array")
    proc = run("certify", str(garbage), "--k", "3")
    assert proc.returncode == 2 and "cannot read" in proc.stderr


def test_train_prints_summary_and_writes_results(tmp_path):
    out = tmp_path / "out"
    proc = run(
        "train", "--k", "4", "--n", "4", "--runs", "6", "--seed", "3", "--tol", "1e-7", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert "runs per class" in proc.stdout and "global_minimum" in proc.stdout
    import pandas as pd

    frame = pd.read_csv(out / "runs.csv")
    assert list(frame["seed"]) == [3, 4, 5, 6, 7, 8]
    arrays = np.load(out / "arrays.npz")
    assert arrays["theta"].shape == (6, 16)


def test_train_rejects_impossible_width():
    proc = run("train", "--k", "4", "--n", "0", "--runs", "2")
    assert proc.returncode == 2 and "n must be >= 1" in proc.stderr
