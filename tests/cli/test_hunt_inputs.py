"""Hunt inputs that must end in one line on stderr, exit status 2, and nothing created or changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from study.search.driver import HuntOptions, run_hunt
from study.search.identity import HuntInputError, hunt_lock, write_identity
from study.spec import parse_pipeline
from tests.cluster.conftest import TINY

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
