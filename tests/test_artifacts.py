"""Artifacts that tell the truth: data/config agreement, comparable "best", atomic outputs, locks, errors."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import cli
from pipeline.config import load_config, split_overrides
from pipeline.data import datasets
from pipeline.data.competition import Split, write_competition
from pipeline.errors import ConfigError, DataError
from pipeline.files import atomic_files, atomic_folders, sha256_file
from pipeline.runs import fitting, registry
from pipeline.runs.folder import RunFolder
from pipeline.stages import submit
from tests.conftest import run_make


def test_overrides_split_where_a_new_key_starts_so_values_may_hold_spaces():
    assert split_overrides('train.epochs=5 data.validation_subjects=[1, 2] data.name="a b"') == [
        "train.epochs=5",
        "data.validation_subjects=[1, 2]",
        'data.name="a b"',
    ]
    assert load_config(None, split_overrides("data.validation_subjects=[1, 3]")).data.validation_subjects == (1, 3)
    assert split_overrides("  ") == []


def test_expected_errors_are_one_line_and_bugs_keep_their_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    def raise_(error: BaseException):
        def action() -> None:
            raise error

        return action

    assert cli.run_stage(raise_(DataError("x.csv: bad"))) == 1
    assert capsys.readouterr().err == "error: x.csv: bad\n"
    assert cli.run_stage(lambda: (tmp_path / "missing.csv").read_text()) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.csv'}: No such file or directory"
    for bug in (ValueError("inside Keras"), KeyError("k"), OSError(28, "No space left on device")):
        with pytest.raises(type(bug)):
            cli.run_stage(raise_(bug))


def test_atomic_files_and_folders_change_all_targets_or_none(tmp_path: Path):
    first, second = tmp_path / "a.csv", tmp_path / "a.json"
    first.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_files(first, second) as (temp_first, temp_second):
            temp_first.write_text("new")
            raise RuntimeError("crash before the second file is complete")
    assert (
        first.read_text() == "old" and not second.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
    )
    private, public = tmp_path / "private" / "c", tmp_path / "processed" / "c"
    with pytest.raises(RuntimeError):
        with atomic_folders(private, public) as (temp_private, temp_public):
            (temp_private / "solution.csv").write_text("answers")
            raise RuntimeError("crash while writing the participant side")
    assert not private.exists() and not public.exists() and not list((tmp_path / "private").iterdir())
    with atomic_folders(private, public) as (temp_private, temp_public):
        (temp_private / "solution.csv").write_text("answers")
        (temp_public / "datacard.json").write_text("{}")
    assert (private / "solution.csv").is_file() and (public / "datacard.json").is_file()


def fake_run(root: Path, run_id: str, competition: str, score: float, definition: dict) -> None:
    folder = root / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "run.json").write_text(json.dumps({"competition": competition}))
    (folder / "metrics.json").write_text(
        json.dumps({"best_validation": score, "selection": {"definition": definition, "score": score}})
    )


def test_best_run_compares_only_runs_selected_the_same_way(tmp_path: Path):
    config = load_config(None, [f"paths.root={tmp_path}"])
    noisy = {"competition": "classroom", "select_on": "noisy", "noise_level": 0.5, "draws": 3, "seed": 1}
    clean = {**noisy, "select_on": "clean", "noise_level": 0.0, "draws": 1}
    fake_run(tmp_path, "noisy_a", "classroom", 0.90, noisy)
    fake_run(tmp_path, "noisy_b", "classroom", 0.92, noisy)
    fake_run(tmp_path, "clean_c", "classroom", 0.99, clean)  # higher, but on clean series: not comparable
    fake_run(tmp_path, "raw_d", "raw", 0.995, noisy)  # another competition
    fake_run(tmp_path, "refit_e", "classroom", 1.0, noisy)
    metrics = tmp_path / "runs" / "refit_e" / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "selection": None}))  # a refit: nothing held out
    assert registry.best_run(config, noisy) == "noisy_b"
    assert registry.best_run(config, clean) == "clean_c"
    with pytest.raises(DataError, match=r"4 finished run\(s\) were selected on another definition"):
        registry.best_run(config, {**noisy, "draws": 5})


def test_a_config_asking_for_other_data_settings_is_refused(prepared_root: Path):
    prepared = load_config(None, [f"paths.root={prepared_root}"])
    assert datasets.open_competition(prepared).activities == (1, 2, 3, 4, 5, 6)
    for override, expected in (
        ("data.classes=12", "data.classes: prepared 6, config 12"),
        ("data.noise_profile=sensor-faults", 'data.noise_profile: prepared "gaussian", config "sensor-faults"'),
        ("data.test_noise=0.8", "data.test_noise: prepared 0.5, config 0.8"),
    ):
        with pytest.raises(DataError) as error:
            datasets.open_competition(load_config(None, [f"paths.root={prepared_root}", override]))
        message = str(error.value)
        assert expected in message and "make prepare COMPETITION=classroom" in message and "\n" not in message


def test_a_folder_prepared_before_settings_were_stamped_is_refused_and_a_copied_one_accepted():
    config = load_config(None, [])
    old_card = {"inputs": {"source": "data/raw/hapt", "source_sha256": "0" * 64, "data_config": "161ce08e6ff5f2a4"}}
    assert datasets.settings_mismatch(config, old_card) == [
        "prepared by an older version of make prepare, with no data settings stamped"
    ]
    copied = {"inputs": {"kind": "competition", "origin": "local:/somewhere", "digest": "abc"}}
    assert datasets.settings_mismatch(config, copied) == []


def test_a_run_trained_on_other_prepared_data_is_refused(tiny_run: Path, prepared_root: Path):
    config = load_config(None, [f"paths.root={prepared_root}"])
    lineage = json.loads((tiny_run / "run.json").read_text())
    datasets.check_run_data(config, tiny_run.name, lineage["data_inputs"])  # the data it was trained on: accepted
    stale = {**lineage["data_inputs"], "source_sha256": "0" * 64}
    with pytest.raises(DataError, match="train it again"):
        datasets.check_run_data(config, tiny_run.name, stale)


def tiny_competition(root: Path) -> None:
    """A 3-series competition with an answer key, as prepare would leave it."""
    rng = np.random.default_rng(0)
    splits = {
        "train": Split(
            rng.normal(size=(4, 3, 2)).astype(np.float32), np.array(["t1", "t2", "t3", "t4"]), np.array([1, 2, 1, 2])
        ),
        "test": Split(rng.normal(size=(3, 3, 2)).astype(np.float32), np.array(["x1", "x2", "x3"])),
    }
    folder = root / "data" / "processed" / "tiny"
    folder.mkdir(parents=True)
    write_competition(folder, "csv", ("a", "b"), splits, default_activity=1)
    (root / "data" / "private" / "tiny").mkdir(parents=True)
    pd.DataFrame({"file": ["x1", "x2", "x3"], "activity": [1, 2, 2], "Usage": ["Public", "Private", "Private"]}).to_csv(
        root / "data" / "private" / "tiny" / "solution.csv", index=False
    )


def test_leaderboard_writers_wait_for_the_file_lock(tmp_path: Path):
    tiny_competition(tmp_path)
    config = load_config(None, [f"paths.root={tmp_path}", "data.competition=tiny"])
    files = []
    for name, answers in (("first.csv", [1, 2, 2]), ("second.csv", [1, 1, 1])):
        path = tmp_path / "submissions" / name
        path.parent.mkdir(exist_ok=True)
        pd.DataFrame({"file": ["x1", "x2", "x3"], "activity": answers}).to_csv(path, index=False)
        files.append(path)
    submit.submit_local(config, files[0], "")
    lock = submit.leaderboard_lock(config)
    with lock:  # another writer holds the leaderboard
        writer = threading.Thread(target=submit.submit_local, args=(config, files[1], ""))
        writer.start()
        time.sleep(1.5)
        assert writer.is_alive(), "the second writer must wait for the lock"
        assert len(submit.read_leaderboard(config)) == 1
    writer.join(timeout=60)
    board = submit.read_leaderboard(config)
    assert sorted(board["file"]) == ["first.csv", "second.csv"]
    assert board.set_index("file").loc["first.csv", "public_score"] == 1.0


def test_unknown_names_in_the_config_are_config_errors():
    from pipeline import models
    from pipeline.data.signals import add_noise

    with pytest.raises(ConfigError, match="unknown model"):
        models.build_model(load_config(None, ["model.name=nope"]), (5, 9), 3)
    with pytest.raises(ConfigError, match="unknown noise profile"):
        add_noise(np.zeros((1, 2, 2)), "nope", 0.5, np.ones(2), 0)


def test_folds_keep_whole_subjects_together():
    subjects = np.repeat(np.arange(10), 7)
    ids = np.array([f"{k:05d}" for k in np.random.default_rng(0).permutation(70)])
    assignment = datasets.fold_assignment(ids, subjects, folds=5, gap=4)
    assert set(assignment) == {0, 1, 2, 3, 4}
    for subject in range(10):
        assert len(set(assignment[subjects == subject])) == 1
    with pytest.raises(DataError, match="cannot fill cv.folds=5"):
        datasets.fold_assignment(ids[:21], subjects[:21], folds=5, gap=4)


def test_blocks_without_subjects_purge_the_held_out_blocks_neighbours_so_no_window_is_shared():
    # Series i holds windows i..i+4 (5 consecutive windows, stride 1, as classroom series do).
    ids = np.array([f"s{k}" for k in range(50)])[np.random.default_rng(1).permutation(50)]
    windows = {identifier: set(range(int(identifier[1:]), int(identifier[1:]) + 5)) for identifier in ids}
    assignment = datasets.fold_assignment(ids, None, folds=4, gap=4)
    assert (assignment >= 0).all()  # every series is held out once
    for fold in range(4):
        training = datasets.training_mask(ids, None, assignment, fold, gap=4)
        inside = set().union(*(windows[i] for i in ids[assignment == fold]))
        outside = set().union(*(windows[i] for i in ids[training]))
        assert not inside & outside, f"fold {fold} shares windows with its training series"
        # only the held-out block's neighbours are purged: 4 on each inner side
        assert training.sum() == 50 - (assignment == fold).sum() - (4 if fold in (0, 3) else 8)
        assert not training[assignment == fold].any()
    with_one_less = datasets.training_mask(ids, None, assignment, 1, gap=3)
    assert (
        not set()
        .union(*(windows[i] for i in ids[assignment == 1]))
        .isdisjoint(set().union(*(windows[i] for i in ids[with_one_less])))
    )  # a gap shorter than the windows' overlap shares windows: the check above can fail
    subjects = np.repeat(np.arange(10), 5)
    by_subject = datasets.fold_assignment(ids, subjects, folds=5, gap=4)
    np.testing.assert_array_equal(datasets.training_mask(ids, subjects, by_subject, 2, gap=4), by_subject != 2)
    # Natural order: s9 and s10 are neighbours, whatever the text order says.
    assert datasets.natural_key("s9") < datasets.natural_key("s10")


def test_subject_files_round_trip_and_are_checked(tmp_path: Path):
    from pipeline.data.competition import load_competition

    rng = np.random.default_rng(0)
    splits = {
        "train": Split(
            rng.normal(size=(4, 3, 2)).astype(np.float32),
            np.array(["t1", "t2", "t3", "t4"]),
            np.array([1, 2, 1, 2]),
            np.array([7, 7, 8, 9]),
        ),
        "test": Split(rng.normal(size=(2, 3, 2)).astype(np.float32), np.array(["x1", "x2"])),
    }
    folder = tmp_path / "comp"
    folder.mkdir()
    write_competition(folder, "csv", ("a", "b"), splits, default_activity=1)
    assert load_competition(folder).train.subjects.tolist() == [7, 7, 8, 9]
    (folder / "subject_train.csv").write_text("file,subject\nt1,7\nt2,7\n")
    with pytest.raises(DataError, match=r"subject_train\.csv: no subject for series t3"):
        load_competition(folder)


def test_compare_ranks_by_validation_and_the_test_columns_cannot_change_it():
    from pipeline.studies import compare

    rng = np.random.default_rng(0)
    rows = [
        {
            "model": model,
            "cell": cell,
            "seed": seed,
            "val@0": rng.random(),
            "val@0.5": rng.random(),
            "test@0.5": rng.random(),
        }
        for model in ("bilstm", "stacked")
        for cell in ("none", "l2", "dropout")
        for seed in (1, 2)
    ]
    table = pd.DataFrame(rows)
    ranked = compare.summarize(table, 0.5)
    for _model, group in ranked.groupby("model"):
        assert group["val@0.5"].is_monotonic_decreasing and list(group["rank"]) == [1, 2, 3]
    scrambled = table.assign(**{"test@0.5": rng.permutation(table["test@0.5"].to_numpy())})
    assert ranked[["model", "cell", "rank"]].equals(compare.summarize(scrambled, 0.5)[["model", "cell", "rank"]])
    assert ranked[["model", "cell", "rank"]].equals(
        compare.summarize(table.drop(columns="test@0.5"), 0.5)[["model", "cell", "rank"]]
    )


def test_a_far_better_test_score_cannot_move_the_best_run(tmp_path: Path):
    """best_run ranks by the selection score alone (training with no answer key at all: tests/test_train.py)."""
    noisy = {"competition": "classroom", "select_on": "noisy", "noise_level": 0.5, "draws": 3, "seed": 1}
    for run_id, score, test in (("chosen", 0.90, 0.50), ("better_on_test", 0.80, 0.99)):
        fake_run(tmp_path, run_id, "classroom", score, noisy)
        metrics = tmp_path / "runs" / run_id / "metrics.json"
        metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "test": {"competition_file": test}}))
    assert registry.best_run(load_config(None, [f"paths.root={tmp_path}"]), noisy) == "chosen"


def test_small_training_sets_get_smaller_batches_and_more_patience():
    from pipeline.runs.fitting import adapted_schedule

    config = load_config()
    # the competitions as they are
    assert adapted_schedule(config, 4026) == (64, 10) and adapted_schedule(config, 300) == (64, 10)
    assert adapted_schedule(config, 48) == (8, 34)  # 6 steps an epoch: about 200 steps of patience
    assert adapted_schedule(load_config(None, ["train.patience=50"]), 48) == (8, 50)


def test_a_validation_split_of_a_few_dozen_series_is_too_small_to_choose_on(tmp_path: Path):
    from pipeline.data.competition import Competition

    def competition(validation: int, train: int = 400) -> Competition:
        def split(count, prefix):
            return Split(
                np.zeros((count, 3, 2), np.float32),
                np.array([f"{prefix}{k}" for k in range(count)]),
                np.ones(count, int),
            )  # noqa: E731

        return Competition(
            tmp_path,
            "csv",
            ("a", "b"),
            split(train, "t"),
            split(validation, "v") if validation else None,
            split(3, "x"),
            pd.DataFrame(),
        )

    config = load_config()
    assert datasets.too_small_to_validate(config, competition(20)) and not datasets.too_small_to_validate(
        config, competition(60)
    )
    assert not datasets.too_small_to_validate(config, competition(0, train=400))  # fold 0 of 400 series: 80
    assert datasets.too_small_to_validate(config, competition(0, train=100))  # fold 0 of 100 series: 20
    assert not datasets.too_small_to_validate(
        load_config(None, ["cv.fold=0"]), competition(20)
    )  # a fold run is already a CV's


def test_compare_pairs_each_cell_with_its_models_first_seed_by_seed():
    from pipeline.studies import compare

    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 0.05, 5)  # seeds differ far more than the cells do
    rows = []
    for seed, effect in zip(range(5), seed_effect):
        for cell, shift in (("none", 0.0), ("l2", -0.01), ("dropout", 0.0)):
            jitter = (0.02 if seed % 2 else -0.02) if cell == "dropout" else 0.001 * (seed - 2) if cell == "l2" else 0.0
            rows.append({"model": "bilstm", "cell": cell, "seed": seed, "val@0.5": 0.9 + effect + shift + jitter})
    table = pd.DataFrame(rows)
    paired = compare.paired_against_first(table, compare.summarize(table, 0.5), 0.5).set_index("cell")
    assert set(paired["against"]) == {"none"} and set(paired.index) == {"l2", "dropout"}
    assert paired.loc["l2", "mean difference"] == pytest.approx(-0.01) and paired.loc["l2", "verdict"] == "none ahead"
    assert paired.loc["dropout", "verdict"] == "not separated"  # +-0.02 by seed: no consistent difference
    four = table[table["seed"] < 4]  # fewer than 5 seeds: the difference is reported, not ranked
    assert (
        compare.paired_against_first(four, compare.summarize(four, 0.5), 0.5).set_index("cell").loc["l2", "verdict"]
        == "too few pairs to rank"
    )
    one_seed = table[table["seed"] == 0]
    assert compare.paired_against_first(one_seed, compare.summarize(one_seed, 0.5), 0.5).empty


def test_a_damaged_model_or_history_is_refused_in_one_line_naming_the_file_and_the_rebuild(
    tiny_run: Path, shared_data_root: Path
):
    """A finished run records its files' checksums; a truncated model.keras (make predict) and a
    history.csv holding two writers' logs (make evaluate) are each one line, not Keras' or pandas'
    traceback. An unfinished run's unreadable log is one line too when make train would resume it."""
    root = shared_data_root
    run_dir = root / "runs" / tiny_run.name
    shutil.copytree(tiny_run, run_dir)
    recorded = json.loads((run_dir / "metrics.json").read_text())["checksums"]
    assert set(recorded) == {"model.keras", "history.csv"}
    model = run_dir / "model.keras"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    predicted = run_make("predict", f"RUN={tiny_run.name}", f"SET=paths.root={root}")
    errors = [line for line in predicted.stderr.splitlines() if line.startswith("error:")]
    assert predicted.returncode != 0 and len(errors) == 1 and "Traceback" not in predicted.stderr, predicted.stderr
    assert (
        errors[0].startswith(f"error: {model}: damaged or changed since the run finished")
        and "make train FORCE=1" in errors[0]
    )
    assert not (root / "submissions").exists() or not list((root / "submissions").glob("*.csv"))

    shutil.copy2(tiny_run / "model.keras", model)  # the model whole again; now the log
    history = run_dir / "history.csv"
    history.write_text(history.read_text() + history.read_text())  # a second header in the middle
    evaluated = run_make("evaluate", f"RUN={tiny_run.name}", f"SET=paths.root={root}")
    errors = [line for line in evaluated.stderr.splitlines() if line.startswith("error:")]
    assert evaluated.returncode != 0 and len(errors) == 1 and "Traceback" not in evaluated.stderr, evaluated.stderr
    assert errors[0].startswith(f"error: {history}: damaged or changed since the run finished")
    assert not (root / "reports" / tiny_run.name).exists()
    # the same log in a run that never finished: no checksum to compare, and not a table of numbers
    (run_dir / "metrics.json").unlink()
    with pytest.raises(DataError, match=r"history.csv: cannot be read as a training log .*make train FORCE=1"):
        fitting.resume_state(RunFolder(run_dir), "val_noisy_accuracy")


# make prepare in a child process that dies hard (os._exit: no cleanup, like SIGKILL) at a chosen
# point of its write: after the first split of the new folder, or while the swap deletes the old one.
KILLED_PREPARE = """
import os, shutil, sys
from pipeline import files
from pipeline.data import competition
from pipeline.stages import prepare
where, original_split, original_rmtree = sys.argv[1], competition.write_csv_split, shutil.rmtree
def split_then_die(*args, **kwargs):
    original_split(*args, **kwargs)
    os._exit(9)
def die_while_deleting(path, *args, **kwargs):
    if str(path).endswith(".previous") and os.path.isdir(path):
        os._exit(9)
    original_rmtree(path, *args, **kwargs)
if where == "first split":
    competition.write_csv_split = split_then_die
else:
    files.shutil.rmtree = die_while_deleting
sys.exit(prepare.main(sys.argv[2:]))
"""


def folder_state(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): sha256_file(path) for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_killed_prepare_leaves_a_whole_competition_folder(prepared_root: Path, tmp_path: Path):
    """Killed while writing, the previous folder is as it was; killed while the swap removes the old
    one, the new one is whole in its place; the next prepare tidies what the kill left."""
    import subprocess
    import sys

    from pipeline.data.competition import load_competition
    from tests.conftest import PROJECT_ROOT, UNTRACKED

    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "raw").symlink_to(prepared_root / "data" / "raw")
    for folder in ("processed", "private"):
        shutil.copytree(prepared_root / "data" / folder, root / "data" / folder)
    classroom = root / "data" / "processed" / "classroom"
    before = folder_state(classroom)

    def killed(where: str, noise: str) -> None:
        result = subprocess.run(
            [sys.executable, "-c", KILLED_PREPARE, where, f"--set=paths.root={root}", f"--set=data.test_noise={noise}", UNTRACKED],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 9, result.stderr[-2000:]

    killed("first split", "0.6")  # other settings: prepare writes a new folder
    assert folder_state(classroom) == before
    killed("while deleting", "0.7")
    assert folder_state(classroom) != before and (root / "data" / "processed" / ".classroom.previous").is_dir()
    card = json.loads((classroom / "datacard.json").read_text())
    assert card["noise"]["test_level"] == 0.7 and len(load_competition(classroom).train) == len(
        load_competition(prepared_root / "data" / "processed" / "classroom").train
    )
    finished = run_make("prepare", f"SET=paths.root={root} data.test_noise=0.7")
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert not list((root / "data" / "processed").glob(".classroom.*"))


HOLD_RUN_FOLDER = """
import sys
from pathlib import Path
from pipeline.runs.folder import RunFolder
folder = RunFolder(Path(sys.argv[1]))
with folder.writing():
    print("held", flush=True)
    sys.stdin.readline()  # until the test has asked for the folder too
    (folder.path.parent / "released").write_text("")
"""


def test_a_second_writer_of_a_run_folder_waits_naming_the_first(tmp_path: Path, capsys):
    """CV entries and ensembles are written under RunFolder.writing, as runs are trained under it."""
    import subprocess
    import sys

    folder = RunFolder(tmp_path / "runs" / "a_cv_entry")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_RUN_FOLDER, str(folder.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        threading.Timer(1.0, lambda: (holder.stdin.write("\n"), holder.stdin.flush())).start()
        with folder.writing():
            assert (tmp_path / "runs" / "released").is_file()  # entered only once the first writer let go
        assert f"being written by process {holder.pid}; waiting" in capsys.readouterr().out
    finally:
        holder.wait(timeout=30)


def test_the_comparison_figure_starts_its_axis_at_zero_and_its_legend_covers_no_bar():
    from pipeline.studies import compare

    cells = ("none", "gaussian_noise", "l2", "dropout", "noised_copies")
    summary = pd.DataFrame(
        [
            {"model": model, "cell": cell, **{f"val@{level}": 0.9 - 0.1 * level for level in (0, 0.5, 1)}}
            for model in ("bilstm", "stacked")
            for cell in cells
        ]
    )
    for level in (0, 0.5, 1):
        summary[f"val@{level}_std"] = 0.01
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = compare.figure_for(summary, "val@", "validation")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # a real layout: the legend's and the bars' places on the canvas
    renderer = canvas.get_renderer()
    for axis in figure.axes:
        assert axis.get_ylim() == (0.0, 1.0)
        legend = axis.get_legend().get_window_extent(renderer)
        assert not legend.overlaps(axis.get_window_extent(renderer))  # beside the axes, so over no bar
        assert len(axis.patches) == len(cells) * 3
