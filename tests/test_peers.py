"""make peers: logistic regression, random forest and MiniRocket scored like the runs, with and without noised copies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.models import baselines
from tests.conftest import run_make, run_module


def test_minirocket_reads_series_shorter_than_its_kernels_zero_padded():
    series = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)
    padded = baselines.channels_first(series)
    assert padded.shape == (2, 3, 9) and (padded[:, :, 5:] == 0).all()
    np.testing.assert_array_equal(padded[:, :, :5], np.transpose(series, (0, 2, 1)))
    assert baselines.channels_first(np.zeros((1, 128, 9))).shape == (1, 9, 128)


def test_make_peers_scores_every_peer_with_and_without_noised_copies(prepared_root):
    small = f"paths.root={prepared_root} train.max_train_series=400 train.noise_seeds=1"
    result = run_make("peers", f"SET={small}")
    assert result.returncode == 0, result.stdout + result.stderr
    table = pd.read_csv(prepared_root / "reports" / "peers" / "classroom" / "peers.csv")
    peers = table[~table["peer"].str.startswith("recurrent")]
    assert sorted(zip(peers["peer"], peers["noised copies"])) == sorted(
        (name, copies) for name in ("logistic_regression", "random_forest", "minirocket") for copies in (0, 1)
    )
    scores = [c for c in table.columns if c.startswith(("val@", "test@")) or c == "test file"]
    assert {"val@0", "val@0.5", "test@0", "test@0.5", "test file"} <= set(scores)
    assert ((peers[scores] >= 0) & (peers[scores] <= 1)).all().all()
    assert "fitting on 800 series" in result.stdout  # the copies double the 400 training series
    # the course's recipe works on the linear model: noised copies make it robust at the test noise
    linear = peers[peers["peer"] == "logistic_regression"].set_index("noised copies")
    assert linear.loc[1, "val@0.5"] > linear.loc[0, "val@0.5"] + 0.05
    assert (prepared_root / "reports" / "peers" / "classroom" / "peers.md").read_text().count("\n|") >= 7
    # each peer's confusion counts on the test file: one row per true class, agreeing with its score
    confusion = json.loads((prepared_root / "reports" / "peers" / "classroom" / "confusion.json").read_text())
    assert confusion["classes"] == [1, 2, 3, 4, 5, 6] and len(confusion["peers"]) == 6
    for entry in confusion["peers"]:
        counts = np.array(entry["counts"])
        row = peers[(peers["peer"] == entry["peer"]) & (peers["noised copies"] == entry["noised copies"])]
        assert counts.shape == (6, 6) and counts.sum() == 1977  # the classroom test file's series
        assert np.trace(counts) / counts.sum() == pytest.approx(row["test file"].iloc[0], abs=1e-4)


def test_an_unknown_peer_is_one_line(prepared_root):
    result = run_module(
        "pipeline.studies.peers", "--set", f"paths.root={prepared_root}", "--set", 'peers.models=["svm"]'
    )
    assert (
        result.returncode == 1
        and result.stderr.strip()
        == "error: peers.models: unknown peer 'svm' (known: logistic_regression, random_forest, minirocket)"
    )
