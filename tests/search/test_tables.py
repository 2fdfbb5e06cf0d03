"""The hunt's tables kept per trial (study.search.tables) against a full rebuild from the trial files:
appended rows are the trial files' rows (labels settled by study.search.labels before the files are
written), and a hunt ends with the rebuild's runs.csv byte for byte, where L* is unknown and
configurations repeat, in or out of order, with earlier trials relabelled, and across a resume."""

import shutil

import numpy as np
import pandas as pd

from study.record import RunBatch, save_trial, trial_frame, trial_stem, write_tables
from study.record.files import read_csv, write_csv
from study.search.tables import HuntTables

GAP_TOL = 1e-6


def _batch(seeds: list[int], losses: list[float], classes: list[str], *, known: bool = False) -> RunBatch:
    """Runs of a landscape without L* (each labelled against its chunk's best, as workers do)."""
    second = {"global_minimum": "minimum", "spurious_minimum": "minimum", "saddle": "saddle"}
    frame = pd.DataFrame(
        {
            "seed": seeds,
            "loss": losses,
            "l_star": min(losses),
            "l_star_source": "landscape" if known else "best of batch",
            "loss_gap": [x - min(losses) for x in losses],
            "critical_point": classes,
            "second_order": [second.get(c, "") for c in classes],
            "steps": [100 + s for s in seeds],
            "certified": [c == "spurious_minimum" for c in classes],
            "verdict": ["confirmed" if c == "spurious_minimum" else "" for c in classes],
        }
    )
    R = len(seeds)
    return RunBatch(
        frame=frame,
        theta=np.zeros((R, 2)),
        theta0=np.zeros((R, 2)),
        eigenvalues=np.zeros((R, 2)),
        curve_steps=np.arange(2),
        curve=np.zeros((R, 2)),
        train_span=np.zeros((R, 2)),
    )


def _save(out, seed_base: int, lr: float, losses: list[float], classes: list[str], **kw):
    batch = _batch([seed_base * 10 + i for i in range(len(losses))], losses, classes, **kw)
    frame = trial_frame(
        batch, trial=seed_base, seed_base=seed_base, values={"lr": lr, "k": 2}, landscape="piecewise_linear"
    )
    return save_trial(out, frame, batch, seed_base=seed_base)


def _tables(out):
    return HuntTables(out, lambda: pd.DataFrame({"trial": [0]}))


def _rebuilt(out, tmp_path) -> bytes:
    """runs.csv as a full rewrite makes it: every trial file read back (their labels are final)."""
    copy = tmp_path / f"rebuild-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(out / "trials", copy / "trials")
    write_tables(copy, pd.DataFrame({"trial": [0]}))
    return (copy / "runs.csv").read_bytes()


S, G, N = "spurious_minimum", "global_minimum", "not_converged"
# (seed base, lr, losses, classes): lr 0.1 repeats three times, its best falls on the third; lr 0.2
# has no converged run at first
TRIALS = [
    (0, 0.1, [0.5, 0.3, 0.9], [S, G, N]),
    (1, 0.2, [0.7, 0.8, 0.6], [N, N, N]),
    (2, 0.1, [0.4, 0.35, 0.31], [S, S, G]),
    (3, 0.2, [0.65, 0.9, 0.75], [G, S, N]),
    (4, 0.3, [0.2, 0.25, 0.2], [G, S, "saddle"]),
    (5, 0.1, [0.1, 0.6, 0.3], [G, S, S]),
]


def test_appends_of_new_configurations_in_seed_order_are_the_rebuild(tmp_path):
    out = tmp_path / "hunt"
    tables = _tables(out)
    for seed_base, lr, losses, classes in TRIALS:
        tables.add_runs(_save(out, seed_base, lr + seed_base, losses, classes))
        assert tables.exact
        assert (out / "runs.csv").read_bytes() == _rebuilt(out, tmp_path)  # no rebuild was needed
    assert tables.rebuilds == 0


def test_trials_out_of_order_end_as_the_rebuild(tmp_path):
    out = tmp_path / "hunt"
    tables = _tables(out)
    order = [TRIALS[i] for i in (1, 0, 2, 4, 3, 5)]  # trials finishing out of seed order
    for seed_base, lr, losses, classes in order:
        tables.add_runs(_save(out, seed_base, lr, losses, classes))
        # the rows just appended are the trial file's rows, as a rebuild reads them
        appended = pd.read_csv(out / "runs.csv").query(f"seed_base == {seed_base}").reset_index(drop=True)
        (tmp_path / "now.csv").write_bytes(_rebuilt(out, tmp_path))
        rebuilt = pd.read_csv(tmp_path / "now.csv").query(f"seed_base == {seed_base}").reset_index(drop=True)
        pd.testing.assert_frame_equal(appended, rebuilt)
    assert not tables.exact  # the rebuild orders trials by seed base
    assert (out / "runs.csv").read_bytes() != _rebuilt(out, tmp_path)
    tables.finish()
    assert (out / "runs.csv").read_bytes() == _rebuilt(out, tmp_path)
    assert tables.rebuilds == 1


def test_an_earlier_trial_relabelled_in_its_file_is_rebuilt_at_the_end(tmp_path):
    """When a configuration's best drops the writer rewrites its earlier trial files (labels.settle) and
    tells the tables, whose appended rows for them are then stale until the rebuild at the end."""
    out = tmp_path / "hunt"
    tables = _tables(out)
    for seed_base, lr, losses, classes in TRIALS[:3]:
        tables.add_runs(_save(out, seed_base, lr, losses, classes))
    assert tables.exact
    path = out / "trials" / f"{trial_stem(0)}.csv"
    earlier = read_csv(path)
    assert earlier is not None
    write_csv(earlier.assign(l_star=0.1, l_star_source="best of configuration"), path)
    tables.relabelled([0])
    assert not tables.exact
    assert set(pd.read_csv(out / "runs.csv").query("seed_base == 0")["l_star"]) != {0.1}
    tables.finish()
    assert (out / "runs.csv").read_bytes() == _rebuilt(out, tmp_path)
    assert set(pd.read_csv(out / "runs.csv").query("seed_base == 0")["l_star"]) == {0.1}
    assert tables.rebuilds == 1


def test_a_resumed_hunt_rebuilds_once(tmp_path):
    out = tmp_path / "hunt"
    first = _tables(out)
    for seed_base, lr, losses, classes in TRIALS[:3]:
        first.add_runs(_save(out, seed_base, lr, losses, classes))
    # a new driver: state rebuilt from the files, then the rest appended
    (out / "runs.csv").write_text("cut short")
    resumed = _tables(out)
    resumed.rebuild()
    assert (out / "runs.csv").read_bytes() == _rebuilt(out, tmp_path)
    for seed_base, lr, losses, classes in TRIALS[3:]:
        resumed.add_runs(_save(out, seed_base, lr, losses, classes))
    assert resumed.exact and resumed.rebuilds == 1  # appended in seed order after the rebuild
    resumed.finish()
    assert (out / "runs.csv").read_bytes() == _rebuilt(out, tmp_path)


def test_a_rerun_trial_and_a_column_of_another_type_keep_the_table_exact(tmp_path):
    out = tmp_path / "hunt"
    tables = _tables(out)
    for seed_base, lr, losses, classes in TRIALS[:2]:
        tables.add_runs(_save(out, seed_base, lr, losses, classes, known=True))
    # the same seed base again (an interrupted trial re-run): rebuilt at once, no duplicate rows
    tables.add_runs(_save(out, 1, 0.2, [0.7, 0.8, 0.6], [N, N, N], known=True))
    assert tables.rebuilds == 1 and len(pd.read_csv(out / "runs.csv")) == 6
    # a trial whose int column reads back as float is written as the rebuild writes it, at the end
    batch = _batch([90, 91], [0.1, 0.2], [G, S], known=True)
    frame = trial_frame(batch, trial=9, seed_base=9, values={"lr": 0.5, "k": 2}, landscape="piecewise_linear")
    frame["steps"] = [1.5, np.nan]
    tables.add_runs(save_trial(out, frame, batch, seed_base=9))
    assert not tables.exact
    tables.finish()
    assert (out / "runs.csv").read_bytes() == _rebuilt(out, tmp_path)


def test_a_hunt_without_l_star_ends_with_the_rebuilds_tables_and_resumes(tmp_path, ray_local):
    """A real hunt (local Ray, Optuna and MLflow on SQLite) where L* is unknown and each of two
    configurations gets several trials, chunked: its tables at the end are a rebuild's, byte for byte."""
    import optuna

    from study.search.driver import HuntOptions, run_hunt
    from study.search.hunt_study import trials_table
    from study.search.samplers import make_storage
    from study.spec import parse_pipeline

    spec = parse_pipeline(
        {
            "name": "no_l_star",
            "landscape": "piecewise_linear",
            "fixed": {"d0": 3, "N": 20, "widths": [2]},  # N above capacity: no L*
            "search": {"lr": {"type": "categorical", "choices": [0.05, 0.1]}},
            "train": {"tol": 1.0e-5, "max_steps": 200},
            "diagnostics": {"gap_tol": GAP_TOL, "grad_tol": 10.0},  # loose: most runs converge
            "runs_per_trial": 4,
            "chunk_size": 2,
            "trials": 5,
            "sampler": "random",
        }
    )
    out = tmp_path / "hunt"
    for trials in (5, 7):  # then resumed
        run_hunt(spec, HuntOptions(out=out, trials=trials, progress=False))
        assert (out / "runs.csv").read_bytes() == _rebuilt(out, tmp_path)
        study = optuna.load_study(study_name="no_l_star", storage=make_storage(None, out))
        assert (out / "trials.csv").read_text() == trials_table(study).to_csv(index=False)
        runs = pd.read_csv(out / "runs.csv")
        assert len(runs) == 4 * trials and runs["l_star_source"].str.startswith("best of").all()
        per_configuration = runs.groupby("param_lr")
        assert (per_configuration["l_star_source"].nunique() == 1).all()
        assert per_configuration.size().max() > 4  # a configuration with runs of several trials
        timing = pd.read_csv(out / "driver_timing.csv")
        assert len(timing) >= 2 and (timing["seconds"] >= timing["work"]).all()
