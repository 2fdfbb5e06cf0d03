"""`study bench soak`: a real hunt of cheap trials, timed per trial by the driver's writer."""

import math
import re

import pytest

from study.bench import soak
from study.cli import main as cli_main


def _report(out: str) -> dict[str, float]:
    lines = out.strip().splitlines()
    medians = re.search(
        r"tables done: median of the first (\d+) trials ([\d.]+) ms, last \d+ ([\d.]+) ms", out
    )
    rss = re.search(r"(\d+) MiB after trial \d+, (\d+) MiB at the end; peak RSS (\d+) MiB", out)
    growth = re.fullmatch(r"growth: ([\d.]+)x", lines[-1])
    assert medians and rss and growth, out
    return {
        "window": float(medians[1]),
        "first": float(medians[2]),
        "last": float(medians[3]),
        "peak": float(rss[3]),
        "growth": float(growth[1]),
    }


def test_soak_prints_the_medians_the_memory_and_the_growth_last(capsys, ray_local):
    assert soak.main(trials=24, runs=2, max_steps=50, sampler="tpe") == 0
    out = capsys.readouterr().out
    report = _report(out)
    assert (
        "24 trials x 2 runs" in out
        and "sampler tpe" in out
        and "results arrived -> told and tables done" in out
    )
    assert report["window"] == 12  # a short hunt: half of it per median
    assert all(math.isfinite(v) and v > 0 for v in report.values())
    assert math.isclose(report["growth"], report["last"] / report["first"], rel_tol=0.05, abs_tol=0.01)


def test_soak_refuses_a_hunt_too_short_to_compare(capsys):
    assert cli_main(["bench", "soak", "--trials", "1"]) == 2
    assert capsys.readouterr().err.strip() == "study: error: --trials must be >= 2, got 1"


def test_soak_refuses_a_sampler_it_does_not_compare(capsys):
    assert cli_main(["bench", "soak", "--trials", "4", "--sampler", "grid"]) == 2
    assert capsys.readouterr().err.strip() == "study: error: --sampler must be random or tpe, got 'grid'"


@pytest.mark.slow
def test_soak_of_300_trials_does_not_slow_the_driver(capsys, ray_local):
    assert soak.main(trials=300, runs=2, max_steps=50) == 0
    report = _report(capsys.readouterr().out)
    assert report["window"] == 100
    assert report["growth"] <= 1.5, report
