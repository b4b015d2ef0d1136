"""BasicMotions as a user's small competition: the folder in the original layout, its answer key, the scoring."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from pipeline.data.competition import load_competition
from pipeline.studies import small_competition
from tests.conftest import run_module


def test_written_competition_is_the_original_layout_with_a_noisy_test_and_a_key_outside(tmp_path):
    result = run_module("pipeline.studies.small_competition", "write", "--set", f"paths.root={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    folder, key = (
        tmp_path / "data" / "external" / "basicmotions",
        tmp_path / "data" / "external" / "basicmotions_solution.csv",
    )
    assert (
        sorted(path.name for path in (folder / "train").iterdir()) == ["a01", "a02", "a03", "a04"]
        and not (folder / "validation").exists()
    )
    competition = load_competition(folder)  # the loader every user-brought competition goes through
    assert competition.series_shape == (100, 6) and len(competition.train) == 40 and len(competition.test) == 40
    assert np.bincount(competition.train.labels).tolist() == [0, 10, 10, 10, 10]
    solution = pd.read_csv(key, dtype={"file": str})
    assert sorted(solution["file"]) == sorted(competition.test.ids) and not list(folder.rglob("*solution*"))
    clean, _names = small_competition.bundled_split("test")
    order = {series_id: index for index, series_id in enumerate(competition.test.ids)}
    # The test series are the bundled ones plus noise of about half the training std per channel.
    noise = competition.test.series[[order[f] for f in solution["file"]]] - clean
    train_std = competition.train.series.reshape(-1, 6).std(0)
    np.testing.assert_allclose(noise.reshape(-1, 6).std(0) / train_std, 0.5, rtol=0.1)

    # Scoring: the newest submission against the key, beside MiniRocket.
    submission = solution.copy()
    submission.loc[:9, "activity"] = submission.loc[:9, "activity"] % 4 + 1  # 10 of 40 wrong
    (tmp_path / "submissions").mkdir()
    submission.to_csv(tmp_path / "submissions" / "basicmotions_test.csv", index=False)
    result = run_module("pipeline.studies.small_competition", "score", "--set", f"paths.root={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "reports" / "basicmotions" / "summary.json").read_text())
    assert summary["submission"] == {"file": "basicmotions_test.csv", "accuracy": 0.75}
    assert set(summary["peers"]) == {"MiniRocket", "MiniRocket + 1 noised copy"}
    # MiniRocket learns the four motions (chance 0.25; docs/choosing.md: 0.750, and 1.000 with a noised
    # copy): a peer fitted on misaligned labels or scored against another key falls to chance
    assert summary["peers"]["MiniRocket"] > 0.5 and summary["peers"]["MiniRocket + 1 noised copy"] >= 0.9


def test_score_without_the_key_says_so(tmp_path):
    result = run_module("pipeline.studies.small_competition", "score", "--set", f"paths.root={tmp_path}")
    assert (
        result.returncode != 0
        and "basicmotions_solution.csv: missing" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_unequal_lengths_are_resampled_to_one_and_numbered_classes_keep_their_order():
    short, long = np.array([[0.0, 1.0, 2.0]]), np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])  # (C=1, T_i)
    resampled = small_competition.equal_length([short, long], 5)
    assert resampled.shape == (2, 5, 1)
    np.testing.assert_allclose(resampled[0, :, 0], [0, 0.5, 1, 1.5, 2])  # endpoints kept, linear between
    np.testing.assert_allclose(resampled[1, :, 0], long[0])  # already the length: unchanged
    assert small_competition.class_order(np.array(["10", "2", "1", "2"])) == ("1", "2", "10")
    assert small_competition.class_order(np.array(["walking", "badminton"])) == ("badminton", "walking")


def test_another_bundled_dataset_of_unequal_lengths_becomes_a_competition(tmp_path):
    # One channel, 10 gestures, 50 + 50 series of 29 to 361 steps: the other shape a user brings.
    result = run_module(
        "pipeline.studies.small_competition",
        "write",
        "--dataset",
        "PickupGestureWiimoteZ",
        "--set",
        f"paths.root={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    folder = tmp_path / "data" / "external" / "pickupgesturewiimotez"
    assert sorted(path.name for path in (folder / "train").iterdir()) == [f"a{k:02d}" for k in range(1, 11)]
    competition = load_competition(folder)
    assert competition.series_shape == (361, 1) and len(competition.train) == len(competition.test) == 50
    assert np.bincount(competition.train.labels).tolist() == [0] + [5] * 10
    refused = run_module(
        "pipeline.studies.small_competition", "write", "--dataset", "Covid3Month", "--set", f"paths.root={tmp_path}"
    )
    assert refused.returncode != 0 and "a regression set" in refused.stderr and "Traceback" not in refused.stderr
