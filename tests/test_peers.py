"""make peers: logistic regression, random forest, MiniRocket, MultiRocket-Hydra and QUANT scored like the
runs, with and without noised copies, with their fit time and peak memory."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

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
        (name, copies) for name in baselines.PEERS for copies in (0, 1)
    )
    assert len(baselines.PEERS) == 5 and (peers["fit seconds"] >= 0).all()
    # each fit's own peak (the meter resets between fits): above the process's start, below the machine
    assert peers["fit peak GiB"].between(0.2, 24).all(), peers[["peer", "fit peak GiB"]]
    scores = [c for c in table.columns if c.startswith(("val@", "test@")) or c == "test file"]
    assert {"val@0", "val@0.5", "val@1", "test@0", "test@0.5", "test file"} <= set(scores)
    # every peer learned the six activities from 400 series (chance is 1/6; a peer fed misaligned
    # labels or another split's series scores near it), and the noise of 1.0 costs each of them
    assert (peers["val@0"] > 0.6).all() and (peers["test file"] > 0.45).all(), peers[scores]
    assert (peers["val@1"] < peers["val@0"]).all(), peers[scores]
    assert "fitting on 800 series" in result.stdout  # the copies double the 400 training series
    # the course's recipe works on the linear model: noised copies make it robust at the test noise
    linear = peers[peers["peer"] == "logistic_regression"].set_index("noised copies")
    assert linear.loc[1, "val@0.5"] > linear.loc[0, "val@0.5"] + 0.05
    assert (prepared_root / "reports" / "peers" / "classroom" / "peers.md").read_text().count("\n|") >= 11
    # each peer's confusion counts on the test file: one row per true class, each row summing to that
    # class's series in the answer key (read here, apart from the code that scores)
    confusion = json.loads((prepared_root / "reports" / "peers" / "classroom" / "confusion.json").read_text())
    assert confusion["classes"] == [1, 2, 3, 4, 5, 6] and len(confusion["peers"]) == 10
    solution = pd.read_csv(prepared_root / "data" / "private" / "classroom" / "solution.csv")
    per_class = solution["activity"].value_counts().reindex([1, 2, 3, 4, 5, 6]).to_numpy()
    for entry in confusion["peers"]:
        counts = np.array(entry["counts"])
        assert counts.shape == (6, 6) and (counts.sum(1) == per_class).all(), entry["peer"]


def test_an_unknown_peer_is_one_line(prepared_root):
    result = run_module(
        "pipeline.studies.peers", "--set", f"paths.root={prepared_root}", "--set", 'peers.models=["svm"]'
    )
    assert (
        result.returncode == 1
        and result.stderr.strip()
        == "error: peers.models: unknown peer 'svm' (known: logistic_regression, random_forest, minirocket, "
        "multirocket_hydra, quant)"
    )


def test_a_peer_without_pytorch_is_one_line(monkeypatch):
    import importlib.util

    import pytest

    from pipeline.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "torch" else real(name, *rest))
    baselines.check_can_fit("minirocket")  # numba's, not torch's
    with pytest.raises(ConfigError, match=r"^peer quant needs PyTorch: run make install-torch \(make peers does\)$"):
        baselines.check_can_fit("quant")
