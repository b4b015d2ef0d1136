"""Predictions, submission files, ensembles and the local leaderboard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data import scoring
from pipeline.data.competition import DataError, load_competition
from pipeline.stages import predict, submit
from tests.conftest import PROJECT_ROOT, TINY, run_make

pytestmark = pytest.mark.slow


def latest(folder: Path, pattern: str) -> Path:
    return max(folder.glob(pattern), key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def second_run(prepared_root: Path) -> str:
    from pipeline.stages import runs

    overrides = [f"paths.root={prepared_root}", *TINY, "train.seed=5", "regularization.gaussian_noise=0.3"]
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.train", *[f"--set={o}" for o in overrides]],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return runs.run_id_for(load_config(None, overrides))


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
