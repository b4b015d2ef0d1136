"""Pure parts of the training stage: lineage names, optimizer and loss settings."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from pipeline import models
from pipeline.config import load_config
from pipeline.data import scoring
from pipeline.runs import fitting, registry


def test_regularizer_tag_names_every_active_regularizer():
    assert registry.regularizer_tag(load_config()) == "none"
    config = load_config(
        None,
        [
            "regularization.gaussian_noise=0.5",
            "regularization.l1=1e-5",
            "regularization.l2=1e-4",
            "regularization.dropout=0.3",
            "augment.noised_copies=4",
            "augment.rotation_degrees=15",
            "train.label_smoothing=0.1",
            "train.early_stopping=false",
        ],
    )
    assert registry.regularizer_tag(config) == "gn0.5-l1l2-do0.3-rot15-x4-ls0.1-noes"


def test_run_id_ignores_paths_and_verbosity_but_not_the_seed():
    base = load_config()
    assert registry.run_id_for(base) == registry.run_id_for(
        load_config(None, ["paths.root=/tmp/elsewhere", "train.verbose=2"])
    )
    assert registry.run_id_for(base) != registry.run_id_for(load_config(None, ["train.seed=1"]))
    assert registry.run_id_for(base).startswith("classroom_bilstm_none_")


@pytest.mark.parametrize(
    "overrides, optimizer_class",
    [
        (["train.optimizer=adamw", "train.weight_decay=0.01"], keras.optimizers.AdamW),
        (["train.optimizer=adam"], keras.optimizers.Adam),
        (["train.optimizer=sgd"], keras.optimizers.SGD),
    ],
)
def test_compile_applies_optimizer_clipping_and_label_smoothing(overrides, optimizer_class):
    config = load_config(None, ["model.units=4", "train.clipnorm=1.0", "train.label_smoothing=0.1", *overrides])
    model = models.build_model(config, (5, 9), 3)
    fitting.compile_model(model, config)
    assert type(model.optimizer) is optimizer_class
    assert model.optimizer.clipnorm == 1.0
    assert model.loss.label_smoothing == 0.1
    if optimizer_class is keras.optimizers.AdamW:
        assert model.optimizer.weight_decay == 0.01


def test_clipvalue_bounds_each_gradient_element():
    config = load_config(
        None,
        ["model.name=lstm", "model.units=4", "train.optimizer=sgd", "train.learning_rate=1.0", "train.clipvalue=0.001"],
    )
    model = models.build_model(config, (5, 9), 3)
    fitting.compile_model(model, config)
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).normal(size=(8, 5, 9)).astype(np.float32) * 100
    model.train_on_batch(x, keras.utils.to_categorical(np.arange(8) % 3, 3))
    # SGD with momentum's first step moves each weight by lr * clipped gradient: at most 0.001.
    steps = [
        np.abs(after - b).max()
        for after, b in zip(model.get_weights(), before)
        if after.shape == b.shape and after.dtype == np.float32
    ]
    assert max(steps) <= 0.001 + 1e-7


def test_accuracy_at_noise_reports_spread_over_draws():
    class Oracle:
        """Predicts class 1 when the first feature is positive: noise flips some answers."""

        def predict(self, x, batch_size=None, verbose=0):
            return np.stack([x[:, 0, 0] <= 0, x[:, 0, 0] > 0], -1).astype(float)

    series = np.ones((500, 1, 1), np.float32) * 0.5
    labels = np.ones(500, np.int64)
    table = scoring.accuracy_at_noise(
        Oracle(), series, labels, (0.0, 1.0), draws=3, profile="gaussian", noise_unit=np.ones(1), base_seed=0
    )
    assert table["0"]["mean"] == 1.0 and table["0"]["std"] == 0.0
    assert 0.6 < table["1"]["mean"] < 0.75  # P(0.5 + N(0, 1) > 0) = 0.69
    assert table["1"]["std"] > 0 and table["1"]["min"] <= table["1"]["mean"] <= table["1"]["max"]


def test_bench_measures_speed_and_memory(tmp_path):
    import json
    import subprocess
    import sys

    from tests.conftest import PROJECT_ROOT

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.perf.bench",
            "--models",
            "lstm",
            "--shapes",
            "5x9",
            "--windows",
            "256",
            f"--set=paths.root={tmp_path}",
            "--set=model.units=8",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "reports" / "bench.json").read_text())
    assert report["backend"] == "tensorflow" and "keras" in report["versions"]
    (row,) = report["results"]
    assert (
        row["train_windows_per_second"] > 0
        and row["latency_ms_batch1"] > 0
        and row["inference_windows_per_second_batch512"] > 0
    )
    assert 100 < row["peak_rss_mb_train"] < 4096 and 100 < row["peak_rss_mb_infer"] < 4096
    # the exported file: an 8-unit LSTM is a few kB; its dynamic-range variant is not larger; LiteRT answers in under a second
    assert (
        0 < row["litert_dynamic_mb"] <= row["litert_mb"] < 0.5
        and 0 < row["litert_latency_ms"] < 1000
        and "litert_select_ops" not in row
    )
    assert "| lstm" in (tmp_path / "reports" / "bench.md").read_text()


def test_tensorflow_start_up_noise_is_filtered_but_real_errors_are_not():
    from pipeline.runtime import BOILERPLATE

    assert BOILERPLATE.match("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert BOILERPLATE.match(
        "I0000 00:00:1795636441.899702   24180 cudart_stub.cc:31] Could not find cuda drivers on your machine"
    )
    assert not BOILERPLATE.match("E0000 00:00:1 some_kernel.cc:12] Out of memory")
    assert not BOILERPLATE.match("Traceback (most recent call last):")


def test_the_cuda_initialization_line_is_hidden_only_without_an_nvidia_driver():
    from pipeline.runtime import is_start_up_noise

    line = "E0000 00:00:1 cuda_executor.cc:1] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)"
    assert is_start_up_noise(line, driver_present=False)  # a CPU machine: noise
    assert not is_start_up_noise(line, driver_present=True)  # a GPU machine: the reason for a CPU fallback
    assert not is_start_up_noise("E0000 00:00:1 some_kernel.cc:12] Out of memory", driver_present=False)


def test_a_finished_run_is_reused_only_on_the_data_and_series_it_was_trained_on(prepared_root, tmp_path):
    import shutil

    from pipeline.data.datasets import load_training_data
    from pipeline.runs.folder import RunFolder
    from pipeline.runs.training import training_ids_hash, why_not_reusable

    config = load_config(None, [f"paths.root={prepared_root}"])
    card = json.loads((prepared_root / "data" / "processed" / "classroom" / "datacard.json").read_text())
    data = load_training_data(config)
    run_dir = tmp_path / "runs" / "probe"
    run_dir.mkdir(parents=True)

    def reused(**lineage) -> bool:
        (run_dir / "run.json").write_text(json.dumps({"data_inputs": card["inputs"], **lineage}))
        return not why_not_reusable(RunFolder(run_dir), config, data)

    assert reused(train_ids=training_ids_hash(data))
    assert not reused(train_ids="0" * 16)  # other training series (folds cut otherwise)
    assert not reused(train_series=len(data.train_series))  # no training ids recorded: trained again
    prepared_again = {**card["inputs"], "source_sha256": "1" * 64}
    (run_dir / "run.json").write_text(json.dumps({"data_inputs": prepared_again, "train_ids": training_ids_hash(data)}))
    assert "as it was prepared before" in why_not_reusable(RunFolder(run_dir), config, data)  # prepared again since
    shutil.rmtree(run_dir)


@pytest.mark.parametrize("bar", [True, False])
def test_each_epoch_prints_one_line_and_a_terminal_also_sees_a_bar_that_the_line_replaces(bar, capsys):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    series, labels = np.zeros((12, 4), "float32"), keras.utils.to_categorical(np.arange(12) % 2, 2)
    model.fit(series, labels, batch_size=4, epochs=2, verbose=0, callbacks=[fitting.EpochSummary(2, bar=bar)])
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch   1/2  loss") and lines[1].startswith("epoch   2/2")
    # the bar goes to stderr, over the epoch's 3 batches, and is erased (leave=False) before the line
    assert ("epoch 2/2" in printed.err and "0/3" in printed.err) == bar


def test_progress_lines_count_the_items_and_estimate_the_time_left_from_the_items_that_worked(monkeypatch, capsys):
    from pipeline import progress

    clock = iter([0.0, 0.0, 100.0, 101.0, 221.0])  # start, item 1, item 2 (100 s), item 3 reused (1 s), item 4
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    tracker = progress.Progress(5)
    lines = [tracker.step(f"fold {index}") for index in range(1, 5)]
    assert lines[0] == "[1/5] fold 1"
    assert lines[1] == "[2/5] fold 2  (1 min 40 s so far, about 6 min 40 s left)"  # 4 items left at 100 s
    assert lines[2] == "[3/5] fold 3  (1 min 41 s so far, about 5 min 00 s left)"  # the 1 s item was reused
    assert lines[3] == "[4/5] fold 4  (3 min 41 s so far, about 3 min 40 s left)"  # mean of 100 s and 120 s
    assert capsys.readouterr().out.splitlines() == lines
    assert progress.duration(3725) == "1 h 02 min" and progress.duration(7) == "7 s"


def test_progress_shared_by_workers_counts_their_items_and_divides_the_time_left(monkeypatch):
    """The tuner's JOBS=2: the count comes from the study (others finish trials too), and this worker's
    mean trial time is shared between the two."""
    from pipeline import progress

    clock = iter([0.0, 0.0, 120.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    tracker = progress.Progress(8, workers=2)
    assert tracker.step("trial 0", done=0) == "[1/8] trial 0"
    # meanwhile the other worker finished two trials: 3 finished, this one the 4th, 5 left at 120 s / 2
    assert tracker.step("trial 4", done=3) == "[4/8] trial 4  (2 min 00 s so far, about 5 min 00 s left)"


def test_status_lines_go_through_the_har_logger_and_quiet_hides_them(capsys, prepared_root):
    import logging
    import os
    import subprocess
    import sys

    from pipeline import progress

    logger = logging.getLogger("har")
    progress.Progress(2).step("fold 1")
    assert capsys.readouterr().out == "[1/2] fold 1\n"  # the bare message, on stdout
    logger.setLevel(logging.WARNING)  # what a notebook does to quiet the stages
    try:
        progress.Progress(2).step("fold 1")
        logger.warning("a warning stays")
        printed = capsys.readouterr()
        assert printed.out == "" and printed.err == "a warning stays\n"
    finally:
        logger.setLevel(logging.INFO)
    # HAR_QUIET=1 (make QUIET=1) in a stage's process: its status line is gone, its exit code the same
    command = [sys.executable, "-m", "pipeline.stages.download", "--set", f"paths.root={prepared_root}"]
    loud = subprocess.run(command, capture_output=True, text=True, timeout=120)
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "HAR_QUIET": "1"})
    assert loud.returncode == quiet.returncode == 0 and "up to date" in loud.stdout and quiet.stdout == ""
