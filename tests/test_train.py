"""Training stage: real Keras training on the real (small-capped) competitions, driven like a user does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from pipeline import runs, train
from pipeline.config import load_config
from tests.conftest import PROJECT_ROOT, run_make

pytestmark = pytest.mark.slow

from tests.conftest import TINY, TINY_RUN_OVERRIDES


def sets(root: Path, *overrides: str) -> list[str]:
    return [f"--set={item}" for item in (f"paths.root={root}", *TINY, *overrides)]


def train_process(root: Path, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.train", *sets(root, *overrides)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, **kwargs)


def test_a_run_holds_everything_needed_to_trust_it(tiny_run: Path):
    for name in ("config.json", "run.json", "environment.json", "history.csv", "model.keras", "metrics.json"):
        assert (tiny_run / name).is_file(), name
    assert any((tiny_run / "logs").rglob("events.out.tfevents*"))
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["regularization"]["gaussian_noise"] == 0.5 and config["regularization"]["l2"] == 1e-4
    lineage = json.loads((tiny_run / "run.json").read_text())
    assert lineage["classes"] == [1, 2, 3, 4, 5, 6] and lineage["experiment"] == "baseline"
    assert lineage["regularizer"] == "gn0.5-l2" and lineage["run_id"] == tiny_run.name
    environment = json.loads((tiny_run / "environment.json").read_text())
    assert environment["backend"] == "tensorflow" and environment["versions"]["keras"].startswith("3.")
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert set(metrics["validation"]) == {"0", "0.25", "0.5", "1"}
    assert all(0 <= level["mean"] <= 1 for level in metrics["validation"].values())
    assert "competition_file" in metrics["test"] and set(metrics["test"]["noise_levels"]) == {"0", "0.25", "0.5", "1"}
    history = pd.read_csv(tiny_run / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2]
    assert {"loss", "accuracy", "val_noisy_accuracy", "val_clean_accuracy", "learning_rate"} <= set(history.columns)


def test_noisy_validation_selects_the_checkpoint(tiny_run: Path, prepared_root: Path):
    history = pd.read_csv(tiny_run / "history.csv")
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["monitor"] == "val_noisy_accuracy"
    assert metrics["best_epoch"] == int(history["val_noisy_accuracy"].idxmax()) + 1
    # The saved model scores the noisy validation set exactly as its best epoch did.
    config = load_config(None, [f"paths.root={prepared_root}", *TINY])
    data = train.load_training_data(config)
    model = keras.models.load_model(tiny_run / "model.keras")
    accuracy = (model.predict(data.noisy_validation_series, verbose=0).argmax(-1) == data.validation_labels).mean()
    assert accuracy == pytest.approx(history["val_noisy_accuracy"].max(), abs=1e-6)


def test_same_config_twice_does_no_work_and_the_registry_lists_it(tiny_run: Path, prepared_root: Path):
    overrides = " ".join([f"paths.root={prepared_root}", *TINY_RUN_OVERRIDES])
    result = run_make("train", "EXP=experiments/baseline.toml", f"SET={overrides}")
    assert result.returncode == 0 and "already trained" in result.stdout
    table = runs.list_runs(prepared_root / "runs")
    row = table[table["run_id"] == tiny_run.name].iloc[0]
    assert row["status"] == "complete" and row["model"] == "bilstm" and row["regularization.l2"] == 1e-4
    assert 0 <= row["val@0.5"] <= 1 and 0 <= row["test@1"] <= 1
    listed = run_make("runs", f"SET=paths.root={prepared_root}")
    assert listed.returncode == 0 and tiny_run.name in listed.stdout and "val@0.5" in listed.stdout


def test_two_runs_with_the_same_seed_are_identical(prepared_root: Path, tmp_path: Path):
    overrides = ["train.deterministic=true", "train.seed=7", "train.epochs=2"]
    results = []
    for copy in ("first", "second"):
        root = tmp_path / copy
        root.mkdir()
        (root / "data").symlink_to(prepared_root / "data")  # same data, separate runs/
        result = train_process(root, *overrides)
        assert result.returncode == 0, result.stderr[-2000:]
        run_dir = root / "runs" / train.run_id_for(load_config(None, [f"paths.root={root}", *TINY, *overrides]))
        results.append((json.loads((run_dir / "metrics.json").read_text()), pd.read_csv(run_dir / "history.csv")))
    (first_metrics, first_history), (second_metrics, second_history) = results
    assert first_metrics["validation"] == second_metrics["validation"] and first_metrics["test"] == second_metrics["test"]
    np.testing.assert_array_equal(first_history["loss"].to_numpy(), second_history["loss"].to_numpy())


def test_a_killed_run_resumes_where_it_stopped(prepared_root: Path, tmp_path: Path):
    overrides = ["data.competition=raw", "train.max_train_series=800", "model.units=16", "train.epochs=8", "train.early_stopping=false", "train.noise_seeds=1"]
    command = [sys.executable, "-m", "pipeline.train", *sets(prepared_root, *overrides)]
    config = load_config(None, [f"paths.root={prepared_root}", *TINY, *overrides])
    run_dir = prepared_root / "runs" / train.run_id_for(config)
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        history = run_dir / "history.csv"
        if history.is_file() and len(history.read_text().splitlines()) >= 3:  # header + 2 finished epochs
            break
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = len(pd.read_csv(run_dir / "history.csv"))
    assert 2 <= finished_before < 8, "the run must be killed part-way"
    assert (run_dir / "backup").exists() and not (run_dir / "metrics.json").exists()
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming" in result.stdout
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) <= 8 - finished_before + 1  # only the epochs left (at most one redone)
    history = pd.read_csv(run_dir / "history.csv").drop_duplicates("epoch", keep="last")
    assert list(history["epoch"]) == list(range(8))
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "backup").exists()


def test_mirrored_strategy_on_two_logical_cpus(prepared_root: Path):
    result = train_process(prepared_root, "train.distribute=mirrored", "train.cpu_devices=2", "train.epochs=1", "train.batch_size=32")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 replica(s)" in result.stdout
    config = load_config(None, [f"paths.root={prepared_root}", *TINY, "train.distribute=mirrored", "train.cpu_devices=2", "train.epochs=1", "train.batch_size=32"])
    environment = json.loads((prepared_root / "runs" / train.run_id_for(config) / "environment.json").read_text())
    assert environment["replicas"] == 2 and sum("CPU" in device for device in environment["devices"]) == 2


def test_nan_loss_stops_with_a_clear_error(prepared_root: Path):
    result = train_process(prepared_root, "train.optimizer=sgd", "train.learning_rate=1e38", "train.epochs=2")
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error:") and "NaN" in last_line
    config = load_config(None, [f"paths.root={prepared_root}", *TINY, "train.optimizer=sgd", "train.learning_rate=1e38", "train.epochs=2"])
    run_dir = prepared_root / "runs" / train.run_id_for(config)
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists()


def test_missing_competition_is_a_one_line_error(tmp_path: Path):
    result = train_process(tmp_path, "data.competition=nothing")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nothing" in errors[0]
