"""Predictions, submission files, ensembles and the local leaderboard."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data import scoring
from pipeline.data.competition import DataError, load_competition
from pipeline.runs import registry
from pipeline.stages import ensemble, predict, submit
from tests.conftest import PROJECT_ROOT, TINY, run_make

pytestmark = pytest.mark.slow


def latest(folder: Path, pattern: str) -> Path:
    return max(folder.glob(pattern), key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def second_run(prepared_root: Path) -> str:
    from pipeline.runs import registry

    overrides = [f"paths.root={prepared_root}", *TINY, "train.seed=5", "regularization.gaussian_noise=0.3"]
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.train", *[f"--set={o}" for o in overrides]],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return registry.run_id_for(load_config(None, overrides))


def test_predict_writes_a_valid_submission_with_probabilities_and_lineage(tiny_run: Path, prepared_root: Path):
    result = run_make("predict", f"RUN={tiny_run.name}", f"SET=paths.root={prepared_root}")
    assert result.returncode == 0, result.stderr
    folder = prepared_root / "submissions"
    path = latest(folder, "classroom_bilstm_gn0.5-l2_*[0-9].csv")
    competition = load_competition(prepared_root / "data" / "processed" / "classroom")
    table = pd.read_csv(path, dtype={"file": str})
    assert list(table.columns) == ["file", "activity"]
    assert list(table["file"]) == list(competition.sample_submission["file"])
    assert set(table["activity"]) <= {1, 2, 3, 4, 5, 6}
    probabilities = pd.read_csv(path.with_name(path.stem + ".probabilities.csv"), dtype={"file": str})
    np.testing.assert_allclose(probabilities.filter(like="p_").sum(1), 1.0, atol=1e-4)
    assert (probabilities.filter(like="p_").to_numpy().argmax(1) + 1 == table["activity"]).all()
    lineage = json.loads(path.with_suffix(".json").read_text())
    assert lineage["runs"] == [tiny_run.name] and lineage["file"] == path.name


def test_ensemble_averages_the_members_probabilities(tiny_run: Path, second_run: str, prepared_root: Path):
    config = load_config(None, [f"paths.root={prepared_root}"])
    members = [predict.predict_probabilities(config, [run])[1] for run in (tiny_run.name, second_run)]
    submission, probabilities, lineage = predict.predict_probabilities(config, [tiny_run.name, second_run])
    np.testing.assert_allclose(
        probabilities.filter(like="p_"),
        (members[0].filter(like="p_") + members[1].filter(like="p_")) / 2,
        rtol=1e-5,
        atol=1e-6,
    )
    assert lineage["model"] == "ensemble2" and lineage["runs"] == [tiny_run.name, second_run]
    assert tiny_run.name in lineage["message"] and second_run in lineage["message"]


def test_an_ensemble_is_a_run_that_predict_evaluate_and_export_take(
    tiny_run: Path, second_run: str, prepared_root: Path, shared_data_root: Path
):
    root, members = shared_data_root, [tiny_run.name, second_run]
    for member in members:  # a root of its own: the session's root keeps only the runs its tests made
        shutil.copytree(prepared_root / "runs" / member, root / "runs" / member)
    made = run_make("ensemble", f"RUN={' '.join(members)}", f"SET=paths.root={root}")
    assert made.returncode == 0, made.stderr[-3000:]
    ensemble_id = ensemble.ensemble_id("classroom", members)
    lineage = json.loads((root / "runs" / ensemble_id / "run.json").read_text())
    metrics = json.loads((root / "runs" / ensemble_id / "metrics.json").read_text())
    assert lineage["kind"] == "ensemble" and lineage["members"] == members and lineage["model"] == "ensemble2"
    assert metrics["selection"] is None and {"0", "0.5"} <= set(metrics["validation"]) and "test" in metrics
    # Its one model predicts what averaging its members predicts.
    config = load_config(None, [f"paths.root={root}"])
    _, averaged, _ = predict.predict_probabilities(config, members)
    _, single, _ = predict.predict_probabilities(config, [ensemble_id])
    np.testing.assert_allclose(single.filter(like="p_"), averaged.filter(like="p_"), rtol=1e-5, atol=1e-6)
    # It is never "the best run" (no selection score), and make evaluate and make export take it.
    assert (
        registry.best_run(
            config, json.loads((root / "runs" / members[0] / "metrics.json").read_text())["selection"]["definition"]
        )
        in members
    )
    evaluated = run_make("evaluate", f"RUN={ensemble_id}", f"SET=paths.root={root}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = (root / "reports" / ensemble_id / "report.md").read_text()
    assert "Model `ensemble2`" in report and "Learning curves" not in report  # an ensemble trained nothing itself
    exported = run_make("export", f"RUN={ensemble_id}", f"SET=paths.root={root}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (root / "exports" / ensemble_id / "model.tflite").is_file()
    # make recording's analysis reads a phone recording with it as with its members averaged.
    from pipeline.phone import formats, recording
    from tests.test_recording import app_recording

    _acc, _gyro, times, acc_ms2, app_gyro = app_recording(20)
    formats.write_phyphox(root / "walk", times, acc_ms2, app_gyro)
    by_ensemble = pd.read_csv(recording.analyse(config, root / "walk", [ensemble_id]) / "windows.csv")
    by_members = pd.read_csv(recording.analyse(config, root / "walk", members) / "windows.csv")
    assert len(by_ensemble) == len(by_members) > 0
    np.testing.assert_allclose(by_ensemble.filter(like="p_"), by_members.filter(like="p_"), atol=1e-5)
    refused = run_make("ensemble", f"RUN={members[0]}", f"SET=paths.root={root}")
    assert refused.returncode != 0 and "an ensemble needs two runs or more" in refused.stderr


def test_validation_rejects_what_kaggle_would_reject():
    sample = pd.DataFrame({"file": ["a", "b", "c"], "activity": 1})
    good = pd.DataFrame({"file": ["c", "a", "b"], "activity": [1, 2, 6]})
    scoring.validate_submission(good, sample, (1, 2, 3, 4, 5, 6), "x.csv")
    cases = {
        "header": (good.rename(columns={"activity": "label"}), "header"),
        "duplicate": (pd.DataFrame({"file": ["a", "a", "b"], "activity": 1}), "duplicate"),
        "missing": (good.iloc[:2], "missing"),
        "unknown": (pd.DataFrame({"file": ["a", "b", "d"], "activity": 1}), "unknown"),
        "label": (good.assign(activity=[1, 2, 7]), "invalid activity"),
        "text label": (good.assign(activity=["1", "x", "2"]), "invalid activity"),
    }
    for table, message in cases.values():
        with pytest.raises(DataError, match=message):
            scoring.validate_submission(table, sample, (1, 2, 3, 4, 5, 6), "x.csv")


def test_a_run_of_another_competition_writes_nothing(tiny_run: Path, prepared_root: Path):
    before = set((prepared_root / "submissions").glob("*"))
    result = run_make("predict", f"RUN={tiny_run.name}", "COMPETITION=raw", f"SET=paths.root={prepared_root}")
    assert result.returncode != 0 and "trained on 'classroom'" in result.stderr
    assert set((prepared_root / "submissions").glob("*")) == before


def test_submit_scores_like_kaggle_and_the_leaderboard_flags_edits(tiny_run: Path, prepared_root: Path):
    config = load_config(None, [f"paths.root={prepared_root}"])
    path = predict.predict(config, [tiny_run.name])
    result = run_make("submit", f"FILE={path}", "MESSAGE=first try", f"SET=paths.root={prepared_root}")
    assert result.returncode == 0, result.stderr
    solution = pd.read_csv(prepared_root / "data" / "private" / "classroom" / "solution.csv", dtype={"file": str})
    merged = solution.merge(pd.read_csv(path, dtype={"file": str}), on="file")
    public = merged[merged["Usage"] == "Public"]
    expected = (public["activity_x"] == public["activity_y"]).mean()
    assert f"public score {expected:.5f}" in result.stdout
    board = submit.leaderboard(config)
    row = board[board["file"] == path.name].iloc[0]
    assert row["message"] == "first try" and row["file_check"] == "ok"
    private = merged[merged["Usage"] == "Private"]
    assert row["private_score"] == pytest.approx((private["activity_x"] == private["activity_y"]).mean(), abs=1e-5)
    assert list(board["public_score"]) == sorted(board["public_score"], reverse=True)
    path.write_text(path.read_text().replace(",1\n", ",2\n", 1))
    shown = run_make("leaderboard", f"SET=paths.root={prepared_root}")
    assert "CHANGED since scored" in shown.stdout


def test_submit_refuses_an_invalid_file(prepared_root: Path, tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,activity\n00001,9\n")
    result = run_make("submit", f"FILE={bad}", f"SET=paths.root={prepared_root}")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad.csv" in errors[0] and "missing" in errors[0]


def test_predicting_or_scoring_the_same_thing_again_writes_nothing(tiny_run: Path, prepared_root: Path, capsys):
    config = load_config(None, [f"paths.root={prepared_root}"])
    folder = prepared_root / "submissions"
    first = predict.predict(config, [tiny_run.name])
    files = sorted(folder.iterdir())
    again = predict.predict(config, [tiny_run.name])
    assert again == first and sorted(folder.iterdir()) == files
    assert "up to date" in capsys.readouterr().out

    scored = [run_make("submit", f"FILE={first}", f"SET=paths.root={prepared_root}") for _ in range(2)]
    assert all(result.returncode == 0 for result in scored), scored[1].stderr
    assert "already scored" not in scored[0].stdout and "already scored" in scored[1].stdout
    board = submit.read_leaderboard(config)
    assert (board["file"] == first.name).sum() == 1

    first.write_text(first.read_text().replace(",1\n", ",2\n", 1))  # an edited file is not the prediction any more
    rewritten = predict.predict(config, [tiny_run.name])
    assert rewritten != first and rewritten.is_file()
