"""Activity transcription: target building, metrics, and a tiny end-to-end run of `make transcribe`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import transcribe
from tests.conftest import run_make


def labels(*runs: tuple[int, int]) -> np.ndarray:
    """labels((4, 100), (-1, 20), ...) -> a sample-level label array."""
    return np.concatenate([np.full(count, label) for label, count in runs])


def test_target_merges_repeats_keeps_transitions_and_skips_unlabeled_gaps():
    assert transcribe.activity_sequence(labels((5, 200), (7, 150), (4, 300)), 50) == [5, 7, 4]  # standing, stand-to-sit, sitting
    assert transcribe.activity_sequence(labels((4, 200), (-1, 80), (4, 200), (8, 120)), 50) == [4, 8]  # a gap inside one activity
    assert transcribe.activity_sequence(labels((1, 20), (-1, 100), (2, 300), (3, 30)), 50) == [2]  # slivers cut by the edges
    assert transcribe.activity_sequence(labels((-1, 500)), 50) == []
    assert transcribe.activity_sequence(labels((1, 100), (2, 100), (1, 100)), 50) == [1, 2, 1]  # a return is a new activity


def test_frame_features_are_mean_and_std_per_frame():
    signals = np.arange(250 * 9, dtype=float).reshape(250, 9)
    features = transcribe.frame_features(signals, 100)
    assert features.shape == (2, 18)  # the last 50 samples fill no frame
    np.testing.assert_allclose(features[0, :9], signals[:100].mean(0))
    np.testing.assert_allclose(features[1, 9:], signals[100:200].std(0), rtol=1e-6)
    np.testing.assert_array_equal(transcribe.frame_labels(labels((3, 120), (4, 80)), 100), [3, 4])


def test_encoding_adds_start_end_and_padding():
    previous, following = transcribe.encode([5, 7, 4], max_length=5)
    assert previous.tolist() == [transcribe.START, 7, 9, 6, 0, 0]
    assert following.tolist() == [7, 9, 6, transcribe.END, 0, 0]
    assert transcribe.decode_tokens([7, 9, 6]) == [5, 7, 4]


def test_activity_error_rate_and_exact_accuracy_on_known_cases():
    assert transcribe.activity_error_rate([[1, 2, 3]], [[1, 2, 3]]) == 0
    assert transcribe.activity_error_rate([[1, 2, 3]], [[1, 3]]) == pytest.approx(1 / 3)  # one deletion
    assert transcribe.activity_error_rate([[1, 2], [4]], [[2, 1], [4, 5, 6]]) == pytest.approx((2 + 2) / 3)  # two substitutions, two insertions
    assert transcribe.exact_accuracy([[1, 2], [4]], [[1, 2], [4, 5]]) == 0.5


@pytest.mark.slow
def test_make_transcribe_end_to_end_on_a_tiny_budget(prepared_root: Path):
    overrides = " ".join([
        f"paths.root={prepared_root}", "transcribe.lengths_seconds=[30,60]", "transcribe.max_train_segments=120", "transcribe.epochs=1",
        "transcribe.beam_segments=3", "transcribe.beam_width=2", "model.units=8", "model.decoder_units=8", "model.attention_units=8",
    ])
    result = run_make("transcribe", f"SET={overrides}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = prepared_root / "reports" / "transcribe"
    metrics = pd.read_csv(report / "metrics.csv")
    assert set(metrics["variant"]) == {"attention", "fixed_context"} and set(metrics["condition"]) == {"clean", "noisy"}
    assert set(metrics["decoding"]) == {"greedy", "beam"} and set(metrics["seconds"]) == {30.0, 60.0}
    assert metrics["activity_error_rate"].between(0, 10).all() and metrics["exact_accuracy"].between(0, 1).all()
    assert (metrics[metrics["decoding"] == "beam"]["segments"] <= 3).all()
    for figure in ("error_vs_length.png", "alignment_1.png"):
        assert (report / figure).read_bytes()[:4] == b"\x89PNG"
    assert "fixed context against attention" in (report / "comparison.md").read_text()
    card = (prepared_root / "data" / "processed" / "transcribe" / "datacard.json").read_text()
    assert '"test"' in card and "segments_by_seconds" in card
