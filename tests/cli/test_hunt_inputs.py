"""Hunt inputs that must end in one line on stderr, exit status 2, and nothing created or changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from study.search.driver import HuntOptions, run_hunt
from study.search.identity import HuntInputError, hunt_lock, write_identity
from study.spec import PipelineError, parse_pipeline
from study.spec_memory import check_fits_in_memory, chunk_memory
from tests.cluster.conftest import TINY, free_port, silent_listener

STUDY = [sys.executable, "-m", "study.cli"]
PIPELINE = {"name": "inputs", **TINY}


def hunt(tmp_path: Path, *args: str, pipeline: dict | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pipeline or PIPELINE))
    return subprocess.run([*STUDY, "hunt", str(path), *args], capture_output=True, text=True, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_out_pointing_at_a_file(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    proc = hunt(tmp_path, "--out", str(target))
    one_line_error(proc, "is a file, not a folder")
    assert target.read_text() == "keep me"


def test_journal_in_a_missing_folder_and_tracking_uri_in_a_missing_folder(tmp_path):
    out = tmp_path / "h"
    missing = tmp_path / "missing"
    one_line_error(hunt(tmp_path, "--out", str(out), "--storage", f"journal://{missing}/x"), "does not exist")
    one_line_error(
        hunt(tmp_path, "--out", str(out), "--tracking-uri", f"sqlite:///{missing}/m.db"), "does not exist"
    )
    assert not missing.exists() and not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files; the check cannot be seen")
def test_read_only_mlflow_db(tmp_path):
    out = tmp_path / "h"
    out.mkdir()
    db = out / "mlflow.db"
    db.write_bytes(b"")
    db.chmod(0o444)
    one_line_error(hunt(tmp_path, "--out", str(out)), "read-only")


def test_another_pipeline_or_an_edited_one_into_the_same_out(tmp_path):
    out = tmp_path / "h"
    out.mkdir()
    write_identity(parse_pipeline(PIPELINE), out)
    before = snapshot(out)
    other = hunt(tmp_path, "--out", str(out), pipeline={**PIPELINE, "name": "other"})
    one_line_error(other, "holds hunt 'inputs', not 'other'")
    edited = hunt(tmp_path, "--out", str(out), pipeline={**PIPELINE, "train": {**TINY["train"], "lr": 0.05}})
    one_line_error(edited, "train.lr")
    assert "another --out" in edited.stderr
    assert snapshot(out) == before


def test_a_second_driver_on_the_same_out_is_refused(tmp_path):
    out = tmp_path / "h"
    out.mkdir()
    spec = parse_pipeline(PIPELINE)
    with hunt_lock(out), pytest.raises(HuntInputError, match="another driver"):
        run_hunt(spec, HuntOptions(out=out, progress=False))


def test_certify_rejects_complex_and_prints_strict_json(tmp_path):
    path = tmp_path / "c.npy"
    np.save(path, np.eye(3) * (1 + 1j))
    proc = subprocess.run([*STUDY, "certify", str(path), "--k", "3"], capture_output=True, text=True)
    one_line_error(proc, "complex")
    from tests.diagnostics.test_critical import symmetric_saddle

    _, theta = symmetric_saddle()
    np.save(path := tmp_path / "s.npy", theta.numpy().reshape(2, 2))
    proc = subprocess.run(
        [*STUDY, "certify", str(path), "--k", "2", "--json"], capture_output=True, text=True
    )

    def refuse(name: str) -> None:
        raise AssertionError(f"bare {name} in JSON")

    out = json.loads(proc.stdout, parse_constant=refuse)
    assert out["critical_point"] == "saddle" and out["radius"] is None


def timed_hunt(
    tmp_path: Path, *args: str, pipeline: dict | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = hunt(tmp_path, *args, pipeline=pipeline)
    return proc, time.monotonic() - start


def test_an_absent_ray_head_fails_in_one_line_within_15_seconds(tmp_path):
    out = tmp_path / "h"
    proc, seconds = timed_hunt(tmp_path, "--out", str(out), "--address", f"127.0.0.1:{free_port()}")
    one_line_error(proc, "--address: no Ray cluster answers at 127.0.0.1:")
    assert seconds < 15 and not out.exists()
    malformed = hunt(tmp_path, "--out", str(out), "--address", "no-port-here")
    one_line_error(malformed, "--address: expected HOST:PORT")
    assert not out.exists()


def test_an_address_that_accepts_tcp_but_is_not_ray_fails_in_one_line_within_15_seconds(tmp_path):
    out = tmp_path / "h"
    with silent_listener() as port:  # ray.init waits on it for minutes (measured: over 200 s)
        for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
            proc, seconds = timed_hunt(tmp_path, "--out", str(out), "--address", address)
            one_line_error(proc, f"--address: 127.0.0.1:{port} accepts connections but is not a Ray")
            assert "no gRPC answer in time" in proc.stderr and seconds < 15 and not out.exists()


@pytest.mark.parametrize(
    ("flag", "url", "needle"),
    [
        ("--tracking-uri", "ftp://x", "--tracking-uri: MLflow has no store for 'ftp://x'"),
        ("--tracking-uri", "postgresql+nodriver://u@h/db", "--tracking-uri: no database dialect"),
        ("--storage", "ftp://x", "--storage: no database dialect 'ftp'"),
        ("--storage", "not a url", "--storage: 'not a url' is not a database URL"),
    ],
)
def test_a_store_url_that_cannot_open_is_refused_before_anything_is_written(tmp_path, flag, url, needle):
    out = tmp_path / "h"
    one_line_error(hunt(tmp_path, "--out", str(out), flag, url), needle)
    assert not out.exists()


def test_an_experiment_whose_artifacts_cannot_be_written_is_refused_before_anything_is_written(tmp_path):
    from mlflow.tracking import MlflowClient

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=tracking).create_experiment("inputs", artifact_location="nowhere://bucket/x")
    before = snapshot(tmp_path)
    out = tmp_path / "h"
    proc = hunt(tmp_path, "--out", str(out), "--tracking-uri", tracking)
    one_line_error(proc, "--tracking-uri: its experiment keeps artifacts at 'nowhere://bucket/x'")
    assert not out.exists()
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.endswith("p.yaml")} == {
        k: v for k, v in before.items() if not k.endswith("p.yaml")
    }


def test_a_pipeline_too_large_for_memory_is_refused_at_parse_time(tmp_path):
    pipeline = {k: v for k, v in PIPELINE.items() if k not in ("search", "derived")}
    pipeline["fixed"] = {"k": 100_000, "n": 100_000}
    out = tmp_path / "h"
    proc, seconds = timed_hunt(tmp_path, "--out", str(out), pipeline=pipeline)
    one_line_error(proc, "fixed: a chunk of 2 runs at P = 10,000,000,000 parameters needs at least")
    assert "lower the sizes or chunk_size" in proc.stderr and seconds < 15 and not out.exists()


def test_the_memory_estimate_counts_the_dense_hessians():
    spec = parse_pipeline(PIPELINE)
    small = chunk_memory(spec, spec.resolve({"k": 4}))
    assert small is not None and small.n_params == 16 and small.runs == 2
    assert small.hessians == 2 * 2 * 16**2 * 8  # two (2, 16, 16) float64 copies
    searched = {**PIPELINE, "search": {"k": {"type": "int", "low": 3, "high": 40}}, "chunk_size": 4}
    spec = parse_pipeline(searched)
    need = chunk_memory(spec, spec.resolve({"k": 40}))  # P = 1600 <= max_dense
    assert need is not None and need.hessians == 2 * 4 * 1600**2 * 8
    with pytest.raises(PipelineError, match=r"fixed/search: .* \(at k=40\) needs at least"):
        check_fits_in_memory(spec, memory=need.total - 1)
    check_fits_in_memory(spec, memory=need.total)


def test_a_hunt_whose_trials_all_failed_exits_1_with_the_first_reason(tmp_path):
    empty = tmp_path / "no_cifar"
    empty.mkdir()
    pipeline = {
        "name": "allfail",
        "landscape": "classification",
        "fixed": {"dataset": "cifar10", "data_dir": str(empty)},
        "search": {"hidden": {"type": "int", "low": 2, "high": 3}},
        "runs_per_trial": 2,
        "chunk_size": 2,
        "trials": 2,
        "sampler": "random",
    }
    out = tmp_path / "h"
    proc = hunt(tmp_path, "--out", str(out), "-q", pipeline=pipeline)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "all 2 trial(s) failed; trial 0:" in lines[0], proc.stderr
    assert "no CIFAR-10 python batches" in lines[0]
