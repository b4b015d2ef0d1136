"""End-to-end: the real make targets, run as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.competition import Split, load_competition, write_competition
from tests.conftest import TINY_RUN_OVERRIDES, run_make

pytestmark = pytest.mark.slow


def test_help_is_the_default_and_lists_every_target():
    result = run_make()
    assert result.returncode == 0
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    targets = [line.split(":")[0] for line in makefile.splitlines() if "## " in line and not line.startswith("\t")]
    assert {"all", "data", "prepare", "test", "install"} <= set(targets)
    for target in targets:
        assert f"make {target} " in result.stdout


def test_second_run_does_no_work(prepared_root: Path):
    card = prepared_root / "data" / "processed" / "classroom" / "datacard.json"
    before = card.stat().st_mtime_ns
    result = run_make("data", "prepare", f"SET=paths.root={prepared_root}")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout and "wrote" not in result.stdout
    assert card.stat().st_mtime_ns == before
    # Naming one of the two competitions does not rebuild them: they come from one windowing.
    named = run_make("prepare", "COMPETITION=raw", f"SET=paths.root={prepared_root}")
    assert named.returncode == 0 and "up to date" in named.stdout and "wrote" not in named.stdout, (
        named.stdout + named.stderr
    )
    assert card.stat().st_mtime_ns == before


def test_local_source_becomes_a_competition_that_trains_and_evaluates_without_an_answer_key(tmp_path: Path):
    rng = np.random.default_rng(0)
    source = tmp_path / "my-comp"
    source.mkdir()
    labels = rng.integers(1, 3, 60)
    series = (
        rng.normal(size=(60, 7, 4)).astype(np.float32) + labels[:, None, None]
    )  # learnable: the level tells the class
    splits = {
        "train": Split(series, np.array([f"t{k}" for k in range(60)]), labels),
        "test": Split(rng.normal(size=(3, 7, 4)).astype(np.float32), np.array([f"x{k}" for k in range(3)])),
    }
    write_competition(source, "csv", ("w", "x", "y", "z"), splits, default_activity=1)
    root = tmp_path / "root"
    result = run_make("data", f"SOURCE=local:{source}", f"SET=paths.root={root}")
    assert result.returncode == 0, result.stderr
    tiny = f"SET=paths.root={root} model.units=4 train.epochs=2 train.noise_seeds=1"
    early = run_make("train", "COMPETITION=my-comp", tiny)  # before prepare: the error names the command that fixes it
    errors = [line for line in early.stderr.splitlines() if line.startswith("error:")]
    assert early.returncode != 0 and len(errors) == 1 and "run `make prepare COMPETITION=my-comp`" in errors[0]
    result = run_make("prepare", "COMPETITION=my-comp", f"SET=paths.root={root}")
    assert result.returncode == 0, result.stderr
    loaded = load_competition(root / "data" / "processed" / "my-comp")
    assert loaded.series_shape == (7, 4) and len(loaded.test) == 3
    # 60 labeled series and no validation split: too few to choose a checkpoint on, so make train
    # cross-validates, then blends the CV with MiniRocket + copy (cv.small_blend) on the same folds
    trained = run_make("train", "COMPETITION=my-comp", tiny)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "too few to choose a checkpoint on" in trained.stdout and "cross-validated my-comp_cv5_" in trained.stdout
    (blend_entry,) = [path for path in (root / "runs").glob("my-comp_cv5_blend2_*") if path.is_dir()]
    (cv_entry,) = [path for path in (root / "runs").glob("my-comp_cv5_*") if path.is_dir() and path != blend_entry]
    folds = json.loads((cv_entry / "run.json").read_text())["folds"]
    assert json.loads((blend_entry / "run.json").read_text())["members"] == [cv_entry.name, "peer:minirocket+copies"]
    cv_scores = {
        entry: json.loads((entry / "metrics.json").read_text())["selection"]["score"]
        for entry in (cv_entry, blend_entry)
    }
    fold = json.loads((root / "runs" / folds[1] / "run.json").read_text())
    # blocks of 12, the held-out block's 4 neighbours on each side purged; of the 40 left, the first 8 in
    # id order choose and their 4 next neighbours are purged too; a small competition's schedule
    assert fold["train_series"] == 60 - 12 - 2 * 4 - 8 - 4 and fold["batch_size"] == 8 and fold["patience"] >= 25
    split = json.loads((root / "runs" / folds[1] / "split.json").read_text())
    assert split["chosen_on"] == [f"t{k}" for k in range(8)] and split["scored_on"] == [f"t{k}" for k in range(12, 24)]
    assert not {*split["trained_on"]} & {f"t{k}" for k in (*range(8, 12), *range(24, 32))}  # the purged neighbours
    # the default: whichever of the two cross-validates better, its folds averaged
    predicted = run_make("predict", "COMPETITION=my-comp", tiny)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    (lineage,) = (root / "submissions").glob("my-comp_ensemble5_*.json")
    better = max(cv_scores, key=lambda entry: cv_scores[entry])
    assert json.loads(lineage.read_text())["runs"] == json.loads((better / "run.json").read_text())["folds"]
    evaluated = run_make("evaluate", "COMPETITION=my-comp", "RUN=experiment", tiny)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    (report,) = (root / "reports").glob("my-comp_*/evaluation.json")
    evaluation = json.loads(report.read_text())
    assert (
        evaluation["scored"] == "validation" and evaluation["run_id"] == folds[0]
    )  # no answer key here: the first fold's held-out series
    predictions = pd.read_csv(report.parent / "predictions.csv")
    assert len(predictions) == 12 and set(predictions["file"]) <= {f"t{k}" for k in range(60)}


def test_twelve_classes_and_sensor_faults_through_prepare_train_and_predict(prepared_root: Path, tmp_path: Path):
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "raw").symlink_to(prepared_root / "data" / "raw")  # raw data are immutable: shared
    settings = f"paths.root={root} data.classes=12 data.noise_profile=sensor-faults"
    tiny = (
        f"{settings} data.competition=raw train.max_train_series=400 model.units=4 train.epochs=1 train.noise_seeds=1"
    )
    prepared = run_make("prepare", f"SET={settings}")
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    card = json.loads((root / "data" / "processed" / "raw" / "datacard.json").read_text())
    assert len(card["activities"]) == 12 and card["noise"]["profile"] == "sensor-faults"
    assert sum(card["counts"]["train"][name] for name in ("STAND_TO_SIT", "SIT_TO_STAND", "LIE_TO_STAND")) > 0
    refused = run_make("train", f"SET=paths.root={root}")  # the default settings do not match what is prepared
    assert refused.returncode != 0 and "data.classes: prepared 12, config 6" in refused.stderr
    for target in ("train", "predict"):
        result = run_make(target, *(["RUN=experiment"] if target == "predict" else []), f"SET={tiny}")
        assert result.returncode == 0, result.stderr[-2000:]
    (lineage,) = (root / "runs").glob("raw_*/run.json")
    classes = json.loads(lineage.read_text())["classes"]
    assert max(classes) > 6  # postural transitions are classes of the model
    (submission,) = (root / "submissions").glob("raw_*[0-9].csv")
    assert set(pd.read_csv(submission)["activity"]) <= set(classes)


def test_bad_local_source_fails_cleanly(tmp_path: Path):
    source = tmp_path / "broken"
    (source / "train" / "a01").mkdir(parents=True)
    (source / "train" / "a01" / "s1.csv").write_text(",a,b\n0,1,x\n")
    (source / "test").mkdir()
    root = tmp_path / "root"
    result = run_make("data", f"SOURCE=local:{source}", f"SET=paths.root={root}")
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "s1.csv" in error_lines[0] and "non-numeric" in error_lines[0]
    assert not (root / "data" / "raw" / "broken").exists()


def test_make_all_ends_with_a_scored_submission_and_a_report(shared_data_root: Path, tiny_run: Path):
    """make all on the session's tiny run's configuration, in a root of its own beside that run: the
    train step finds the run done, and the rest of the chain (predict, submit, evaluate) runs on it."""
    root = shared_data_root
    shutil.copytree(tiny_run, root / "runs" / tiny_run.name)
    overrides = " ".join([f"paths.root={root}", *TINY_RUN_OVERRIDES])
    result = run_make("all", "EXP=experiments/baseline.toml", f"SET={overrides}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already trained" in result.stdout and "public score" in result.stdout
    submission = [line for line in result.stdout.splitlines() if line.startswith("wrote") and ".csv" in line][-1]
    assert "/submissions/classroom_bilstm_gn0.5-l2_" in submission and f"from {tiny_run.name}" in submission
    assert f"/reports/{tiny_run.name}/report.md: accuracy" in result.stdout
    assert (root / "reports" / tiny_run.name / "report.md").is_file()
