"""Activity transcription: target building, metrics, and a tiny end-to-end run of `make transcribe`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.studies import transcribe
from tests.conftest import run_make


def labels(*runs: tuple[int, int]) -> np.ndarray:
    """labels((4, 100), (-1, 20), ...) -> a sample-level label array."""
    return np.concatenate([np.full(count, label) for label, count in runs])


def test_target_merges_repeats_keeps_transitions_and_skips_unlabeled_gaps():
    assert transcribe.activity_sequence(labels((5, 200), (7, 150), (4, 300)), 50) == [
        5,
        7,
        4,
    ]  # standing, stand-to-sit, sitting
    assert transcribe.activity_sequence(labels((4, 200), (-1, 80), (4, 200), (8, 120)), 50) == [
        4,
        8,
    ]  # a gap inside one activity
    assert transcribe.activity_sequence(labels((1, 20), (-1, 100), (2, 300), (3, 30)), 50) == [
        2
    ]  # slivers cut by the edges
    assert transcribe.activity_sequence(labels((-1, 500)), 50) == []
    assert transcribe.activity_sequence(labels((1, 100), (2, 100), (1, 100)), 50) == [
        1,
        2,
        1,
    ]  # a return is a new activity


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
    assert transcribe.activity_error_rate([[1, 2], [4]], [[2, 1], [4, 5, 6]]) == pytest.approx(
        (2 + 2) / 3
    )  # two substitutions, two insertions
    assert transcribe.exact_accuracy([[1, 2], [4]], [[1, 2], [4, 5]]) == 0.5


def test_stitched_segments_have_random_orders_and_match_their_targets():
    # Bouts whose features say which activity they are (value = activity), of 10 to 40 frames.
    bouts = {
        activity: [np.full((10 + 10 * k, 18), float(activity), np.float32) for k in range(4)]
        for activity in (1, 2, 4, 5)
    }
    rng = np.random.default_rng(0)
    firsts = set()
    for _ in range(40):
        features, frames, target = transcribe.stitch(bouts, 90, shortest=4, longest=15, rng=rng)
        assert features.shape == (90, 18) and frames.shape == (90,)
        np.testing.assert_array_equal(features[:, 0], frames)  # every frame comes from a bout of its activity
        runs = [(stop - start, label) for start, stop, label in transcribe.label_runs(frames)]
        assert [
            label for _, label in runs
        ] == target  # the target is the order of the pieces, never one activity twice in a row
        assert (
            all(4 <= length <= 15 for length, _ in runs[:-1]) and 1 <= runs[-1][0] <= 15
        )  # only the last piece is cut
        firsts.add(target[0])
    assert firsts == {1, 2, 4, 5}  # the order is drawn, not fixed
    with pytest.raises(ValueError):
        transcribe.stitch({1: bouts[1]}, 20, 4, 15, rng)


def test_across_seeds_says_only_what_every_seed_agrees_on():
    rows = []
    for seed, (attention_30, fixed_30, attention_60, fixed_60) in {
        1: (0.10, 0.20, 0.30, 0.25),
        2: (0.15, 0.18, 0.20, 0.25),
    }.items():
        for variant, at_30, at_60 in (("attention", attention_30, attention_60), ("fixed_context", fixed_30, fixed_60)):
            for seconds, rate in ((30.0, at_30), (60.0, at_60)):
                rows.append(
                    {
                        "task": "shuffled",
                        "condition": "clean",
                        "decoding": "greedy",
                        "seconds": seconds,
                        "seed": seed,
                        "variant": variant,
                        "activity_error_rate": rate,
                    }
                )
                rows.append(
                    {
                        "task": "shuffled",
                        "condition": "clean",
                        "decoding": "beam",
                        "seconds": seconds,
                        "seed": seed,
                        "variant": variant,
                        "activity_error_rate": 9.0,
                    }
                )
    summary = transcribe.across_seeds(pd.DataFrame(rows)).set_index("input")
    assert summary.loc["30 s", "across seeds"] == "attention lower in every seed"
    assert summary.loc["30 s", "per seed (attention - fixed)"] == "-0.100, -0.030"
    assert summary.loc["30 s", "attention"] == "0.125 ± 0.025"  # greedy only: the beam rows are left out
    assert summary.loc["60 s", "across seeds"] == "mixed"
    one_seed = transcribe.across_seeds(pd.DataFrame([r for r in rows if r["seed"] == 1]))
    assert set(one_seed["across seeds"]) == {"one seed: no conclusion"}


@pytest.mark.slow
def test_make_transcribe_end_to_end_on_a_tiny_budget(prepared_root: Path):
    overrides = " ".join(
        [
            f"paths.root={prepared_root}",
            "transcribe.lengths_seconds=[30,60]",
            "transcribe.stride_seconds=60",  # a quarter of the segments: the steps are the same
            "transcribe.shuffled_lengths_seconds=[60]",
            "transcribe.shuffled_segments_per_subject=2",
            "transcribe.max_train_segments=60",
            "transcribe.epochs=1",
            "transcribe.beam_segments=3",
            "transcribe.beam_width=2",
            "model.units=8",
            "model.seq2seq.decoder_units=8",
            "model.seq2seq.attention_units=8",
        ]
    )
    result = run_make("transcribe", "SEEDS=1 2", f"SET={overrides}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "recorded, seed 2, fixed_context: done" in result.stdout
        and "decoding transcribe_shuffled_attention_" in result.stdout
    )  # progress while decoding
    assert re.search(
        r"^\[8/8\] shuffled, seed 2, fixed_context: training and decoding \.\.\.  \(.+ so far, about .+ left\)$",
        result.stdout,
        re.M,
    )
    assert re.search(r"segments \(inputs of \d+ steps done\), .+ so far, about .+ left$", result.stdout, re.M)
    report = prepared_root / "reports" / "transcribe"
    metrics = pd.read_csv(report / "metrics.csv")
    assert set(metrics["variant"]) == {"attention", "fixed_context"} and set(metrics["condition"]) == {"clean", "noisy"}
    assert set(metrics["task"]) == {"recorded", "shuffled"} and set(metrics["seed"]) == {1, 2}
    assert set(metrics[metrics["seed"] == 1]["decoding"]) == {"greedy", "beam"} and set(
        metrics[metrics["seed"] == 2]["decoding"]
    ) == {"greedy"}
    assert set(metrics[metrics["task"] == "recorded"]["seconds"]) == {30.0, 60.0} and set(
        metrics[metrics["task"] == "shuffled"]["seconds"]
    ) == {60.0}
    # greedy decoding scored every test segment of each length that prepare wrote (the data cards)
    for task, folder in (("recorded", "transcribe"), ("shuffled", "transcribe_shuffled")):
        by_length = json.loads((prepared_root / "data" / "processed" / folder / "datacard.json").read_text())
        expected = {float(k): v for k, v in by_length["splits"]["test"]["segments_by_seconds"].items()}
        greedy = metrics[(metrics["task"] == task) & (metrics["decoding"] == "greedy")]
        assert greedy.groupby("seconds")["segments"].agg(["min", "max"]).T.to_dict("records") == [expected] * 2
    assert metrics["activity_error_rate"].notna().all() and (metrics["exact_accuracy"] <= 1).all()
    assert (metrics[metrics["decoding"] == "beam"]["segments"] <= 3).all()
    summary = pd.read_csv(report / "across_seeds.csv")
    assert (
        len(summary) == 2 * 2 + 2 and summary["per seed (attention - fixed)"].str.count(",").eq(1).all()
    )  # two seeds per row
    for figure in ("error_vs_length.png", "alignment_recorded_1.png", "alignment_shuffled_1.png"):
        assert (report / figure).read_bytes()[:4] == b"\x89PNG"
    comparison = (report / "comparison.md").read_text()
    assert "fixed context against attention" in comparison and "## shuffled task" in comparison
    for folder in ("transcribe", "transcribe_shuffled"):
        card = (prepared_root / "data" / "processed" / folder / "datacard.json").read_text()
        assert '"test"' in card and "segments_by_seconds" in card
