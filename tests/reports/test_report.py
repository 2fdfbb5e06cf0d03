"""The study report of a hunt folder, built from synthetic hunts with known counts."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from study.cli import main
from study.reports.report import build_report
from study.reports.tables import binomial_interval, interval_text
from study.tracking.mlflow_sink import log_report

K = 3
SPECTRUM_GLOBAL = np.linspace(0.05, 2.0, K * K)
SPECTRUM_SPURIOUS = np.linspace(0.01, 2.2, K * K)


def test_wilson_interval_known_values():
    low, high = binomial_interval(0, 10)
    z2 = stats.norm.ppf(0.975) ** 2
    assert low == 0.0 and high == pytest.approx(z2 / (10 + z2), abs=1e-12)  # = 0.2775
    assert high == pytest.approx(0.2775, abs=1e-4)
    low, high = binomial_interval(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert low + high == pytest.approx(1.0)
    assert all(math.isnan(v) for v in binomial_interval(0, 0))


def _teacher_student_trial(out: Path, seed_base: int, n: int, spurious: list[np.ndarray], runs: int) -> None:
    """One trial of ``runs`` runs: the first ones end at the given spurious end points (certified),
    the others at the global minimum W = I (padded by a zero row when n > k)."""
    rng = np.random.default_rng(seed_base)
    theta, eigenvalues, rows = [], [], []
    for i in range(runs):
        seed = seed_base * 100_000 + i
        if i < len(spurious):
            W, loss, cls, spectrum = (
                spurious[i],
                0.05 + 0.03 * (i == 2),
                "spurious_minimum",
                SPECTRUM_SPURIOUS,
            )
        else:
            W, loss, cls, spectrum = np.eye(n, K), 0.0, "global_minimum", SPECTRUM_GLOBAL
        theta.append(W.ravel())
        eigenvalues.append(spectrum if n == K else np.linspace(0.0, 2.0, n * K))
        rows.append(
            {
                "trial": seed_base,
                "seed_base": seed_base,
                "seed": seed,
                "loss": loss,
                "lambda_min": spectrum[0],
                "lambda_max": spectrum[-1],
                "critical_point": cls,
                "certified": cls == "spurious_minimum",
                "hyp_orthonormal_teacher": True,
                "line_monotone": cls == "global_minimum",
                "line_largest_bump": 0.0 if cls == "global_minimum" else 0.01,
                "param_k": K,
                "param_excess": n - K,
                "param_n": n,
            }
        )
    pd.DataFrame(rows).sample(frac=1.0, random_state=int(rng.integers(100))).to_csv(
        out / "trials" / f"trial-{seed_base:05d}.csv", index=False
    )
    np.savez_compressed(
        out / "trials" / f"trial-{seed_base:05d}.npz",
        theta=np.stack(theta),
        eigenvalues=np.stack(eigenvalues),
        seed=np.array([r["seed"] for r in rows]),
    )


def synthetic_hunt(out: Path, *, with_spurious: bool = True) -> Path:
    """k = 3: n = 3 with 10 runs (3 certified spurious in 2 families: A twice up to P, Q, and B) and
    n = 4 with 8 global runs. The CSV rows are shuffled against the npz rows (matched by seed)."""
    (out / "trials").mkdir(parents=True)
    rng = np.random.default_rng(0)
    A = np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [-0.2, -0.2, 0.5]])
    B = rng.normal(size=(K, K))
    spurious = [A, A[[2, 0, 1]][:, [1, 0, 2]], B] if with_spurious else []
    _teacher_student_trial(out, 0, K, spurious, 10)
    _teacher_student_trial(out, 1, K + 1, [], 8)
    frames = [pd.read_csv(f) for f in sorted((out / "trials").glob("*.csv"))]
    pd.concat(frames, ignore_index=True).to_csv(out / "runs.csv", index=False)
    return out


def test_report_of_a_synthetic_teacher_student_hunt(tmp_path):
    out = synthetic_hunt(tmp_path / "hunt")
    report = build_report(out)
    text = report.summary.read_text()
    assert text == report.markdown
    low, high = stats.binomtest(3, 10).proportion_ci(method="wilson")
    # k | excess | n | runs | global | spurious | certified | rate [CI] | lowest loss | families
    assert f"| 3 | 0 | 3 | 10 | 7 | 3 | 3 | {interval_text(0.3, low, high)} | 0.05 | 2 |" in text
    assert f"| 3 | 1 | 4 | 8 | 8 | 0 | 0 | {interval_text(0.0, *binomial_interval(0, 8))} | - | 0 |" in text
    assert "3 certified spurious minima among 18 runs" in text
    families = pd.read_csv(report.folder / "families.csv")
    assert families["runs"].tolist() == [2, 1]
    assert families["loss"].tolist() == pytest.approx([0.05, 0.08])
    runs = pd.read_csv(report.folder / "runs.csv")
    assert len(runs) == 18
    representative = runs.iloc[int(families["representative"].iloc[0])]
    assert representative["critical_point"] == "spurious_minimum" and representative["loss"] == 0.05
    for name in ("spurious_rate_vs_k", "family_losses", "hessian_spectra", "basin_vs_width"):
        path = report.folder / f"{name}.png"
        assert path in report.files and path.stat().st_size > 1000
        assert f"![{name}]({name}.png)" in text
    assert "## Basin quality (L4)" in text


def test_report_without_spurious_minima(tmp_path):
    out = synthetic_hunt(tmp_path / "hunt", with_spurious=False)
    report = build_report(out)
    assert "No certified spurious minimum in this hunt" in report.markdown
    assert "No families" in report.markdown
    assert not (report.folder / "family_losses.png").exists()
    assert not (report.folder / "hessian_spectra.png").exists()
    assert pd.read_csv(report.folder / "families.csv").empty


def test_report_of_a_classification_hunt(tmp_path):
    out = tmp_path / "l5"
    (out / "trials").mkdir(parents=True)
    rows = []
    for init, test_acc in (("random", 0.9), ("adversarial", 0.7)):
        for regularization in (False, True):
            for seed in range(3):
                acc = test_acc if not regularization else 0.9
                rows.append(
                    {
                        "trial": 0,
                        "seed_base": 0,
                        "seed": seed,
                        "loss": 1e-3,
                        "critical_point": "global_minimum",
                        "certified": False,
                        "train_acc": 1.0,
                        "test_acc": acc + 0.01 * (seed - 1),
                        "phase1_train_acc": 0.95 if init == "adversarial" else math.nan,
                        "param_init": init,
                        "param_regularization": regularization,
                    }
                )
    pd.DataFrame(rows).to_csv(out / "runs.csv", index=False)
    report = build_report(out)
    assert "## Classification (L5)" in report.markdown
    gaps = report.markdown.split("### Test-accuracy gap")[1]
    # regularization False: gap 0.9 - 0.7 = 0.2; True: 0
    assert "| no | 3 | 3 | 1 | 1 | 0.7 | 0.9 | 0.2 |" in gaps
    assert "| yes | 3 | 3 | 1 | 1 | 0.9 | 0.9 | 0 |" in gaps
    assert (report.folder / "accuracy.png").stat().st_size > 1000
    assert not (report.folder / "spurious_rate_vs_k.png").exists()


def test_cli_report_errors_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "--no-mlflow"]) == 2
    assert "hunt folder not found" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "no runs.csv" in err and len(err.strip().splitlines()) == 1


def test_cli_report_prints_summary(tmp_path, capsys):
    out = synthetic_hunt(tmp_path / "hunt")
    assert main(["report", str(out), "--no-mlflow"]) == 0
    printed = capsys.readouterr().out
    assert "# Report: hunt" in printed and str(out / "report" / "summary.md") in printed


@pytest.mark.slow
def test_report_is_logged_to_the_hunt_run(tmp_path):
    from study.tracking.mlflow_sink import HuntTracker, default_tracking_uri

    out = synthetic_hunt(tmp_path / "hunt")
    tracker = HuntTracker(default_tracking_uri(out), "hunt", "hunt", artifact_root=out / "mlartifacts")
    run_id = tracker.start_hunt({"landscape": "teacher_student"})
    tracker.finish_hunt()
    report = build_report(out)
    assert log_report(report) == run_id
    logged = {a.path for a in tracker.client.list_artifacts(run_id, "report")}
    assert {"report/summary.md", "report/families.csv", "report/family_losses.png"} <= logged


def test_cli_report_rebuilds_a_stale_runs_csv(tmp_path, capsys):
    """A hunt killed between trial 1's files and its table append leaves runs.csv with trial 0 only."""
    out = synthetic_hunt(tmp_path / "hunt")
    assert main(["report", str(out), "--no-mlflow"]) == 0
    assert "stale" not in capsys.readouterr().out  # a current table is left alone
    whole = pd.read_csv(out / "runs.csv")
    whole[whole["seed_base"] == 0].to_csv(out / "runs.csv", index=False)  # 10 of the 18 runs
    assert main(["report", str(out), "--no-mlflow"]) == 0
    printed = capsys.readouterr().out
    assert "runs.csv was stale (10 runs; the trial files hold 18): rebuilt" in printed
    assert "18 runs in 2 trials" in printed
    for table in (out / "runs.csv", out / "report" / "runs.csv"):
        rebuilt = pd.read_csv(table)
        assert sorted(zip(rebuilt["seed_base"], rebuilt["seed"], strict=True)) == sorted(
            zip(whole["seed_base"], whole["seed"], strict=True)
        )


def test_cli_report_leaves_the_table_of_a_running_hunt_alone(tmp_path, capsys):
    from study.search.identity import hunt_lock

    out = synthetic_hunt(tmp_path / "hunt")
    stale = pd.read_csv(out / "runs.csv").iloc[:10]
    stale.to_csv(out / "runs.csv", index=False)
    with hunt_lock(out):  # a driver is appending to it
        assert main(["report", str(out), "--no-mlflow"]) == 0
    assert "a hunt is running" in capsys.readouterr().err
    assert len(pd.read_csv(out / "runs.csv")) == 10
