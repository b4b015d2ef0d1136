"""Training stage: real Keras training on the real (small-capped) competitions, driven like a user does."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data import datasets
from pipeline.runs import fitting, registry
from pipeline.runs.folder import RunFolder
from tests.conftest import PROJECT_ROOT, TINY, TINY_RUN_OVERRIDES, UNTRACKED, run_make

pytestmark = pytest.mark.slow


def sets(root: Path, *overrides: str) -> list[str]:
    return [f"--set={item}" for item in (f"paths.root={root}", *TINY, *overrides)] + [UNTRACKED]


def train_process(root: Path, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.stages.train", *sets(root, *overrides)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


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
    data = datasets.load_training_data(config)
    model = keras.models.load_model(tiny_run / "model.keras")
    accuracy = (model.predict(data.noisy_validation_series, verbose=0).argmax(-1) == data.validation_labels).mean()
    assert accuracy == pytest.approx(history["val_noisy_accuracy"].max(), abs=1e-6)


def test_same_config_twice_does_no_work_and_the_registry_lists_it(tiny_run: Path, prepared_root: Path):
    overrides = " ".join([f"paths.root={prepared_root}", *TINY_RUN_OVERRIDES])
    result = run_make("train", "EXP=experiments/baseline.toml", f"SET={overrides}")
    assert result.returncode == 0 and "already trained" in result.stdout
    table = registry.list_runs(prepared_root / "runs")
    row = table[table["run_id"] == tiny_run.name].iloc[0]
    assert row["status"] == "complete" and row["model"] == "bilstm" and row["regularization.l2"] == 1e-4
    assert 0 <= row["val@0.5"] <= 1 and 0 <= row["test@1"] <= 1
    listed = run_make("runs", f"SET=paths.root={prepared_root}")
    assert listed.returncode == 0 and tiny_run.name in listed.stdout and "val@0.5" in listed.stdout


def test_two_seeded_runs_are_identical_and_the_answer_key_changes_nothing_but_the_reported_test_score(
    prepared_root: Path, tmp_path: Path
):
    """The second run's project has no data/private at all: training, the checkpoint it chose and
    every validation and selection number are the same; only the organizer-side test scores are gone."""
    overrides = ["train.deterministic=true", "train.seed=7", "train.epochs=2"]
    results = []
    for copy, with_key in (("first", True), ("second", False)):
        root = tmp_path / copy
        root.mkdir()
        if with_key:
            (root / "data").symlink_to(prepared_root / "data")  # same data, separate runs/
        else:
            (root / "data").mkdir()
            for folder in ("raw", "processed"):
                (root / "data" / folder).symlink_to(prepared_root / "data" / folder)
        result = train_process(root, *overrides)
        assert result.returncode == 0, result.stderr[-2000:]
        run_dir = root / "runs" / registry.run_id_for(load_config(None, [f"paths.root={root}", *TINY, *overrides]))
        results.append((json.loads((run_dir / "metrics.json").read_text()), pd.read_csv(run_dir / "history.csv")))
    (first_metrics, first_history), (second_metrics, second_history) = results
    for key in ("validation", "selection", "best_epoch", "epochs_run"):
        assert first_metrics[key] == second_metrics[key], key
    pd.testing.assert_frame_equal(first_history, second_history)
    assert "competition_file" in first_metrics["test"] and second_metrics.get("test") is None


def test_two_processes_training_the_same_run_at_once_end_with_one_readable_run(prepared_root: Path, tmp_path: Path):
    """Two terminals (or a notebook beside `make all`) asking for the same run: one trains, the other
    waits for it and reuses the finished run; nothing is written twice, no traceback."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "data").symlink_to(prepared_root / "data")
    command = [sys.executable, "-m", "pipeline.stages.train", *sets(root, "train.epochs=2")]
    started = [subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    started.append(
        subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )
    outputs = [process.communicate(timeout=600) for process in started]
    assert [process.returncode for process in started] == [0, 0], [err[-2000:] for _, err in outputs]
    assert not any("Traceback" in err for _, err in outputs)
    stdout = [out for out, _ in outputs]
    assert sum("already trained with this config" in out for out in stdout) == 1  # the one that waited reused it
    run_dir = root / "runs" / registry.run_id_for(load_config(None, [f"paths.root={root}", *TINY, "train.epochs=2"]))
    history = pd.read_csv(run_dir / "history.csv")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(history["epoch"]) == list(range(metrics["epochs_run"])) == [0, 1]  # one log, one header


# Train in a child process that dies hard (os._exit: no cleanup, like SIGKILL) right after a known
# epoch has been written to history.csv and the backup: no timing involved.
CRASHING_TRAIN = """
import os, sys
import keras
from pipeline.runs import fitting
from pipeline.stages import train
crash_after, original = int(sys.argv[1]), fitting.make_callbacks
class Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == crash_after:
            os._exit(9)
fitting.make_callbacks = lambda *args, **kwargs: original(*args, **kwargs) + [Crash()]
sys.exit(train.main(sys.argv[2:]))
"""


def test_a_killed_run_resumes_where_it_stopped_with_early_stopping_on(prepared_root: Path):
    # A step too small to change any answer: the validation score stays flat, so the best epoch is
    # the first and early stopping must end the run after epoch 3, one epoch after the crash, only if
    # the wait of 1 counted before the crash is carried over (without it the run goes on to epoch 4).
    overrides = [
        "train.epochs=7",
        "train.patience=2",
        "train.reduce_lr_patience=1",
        "train.seed=11",
        "train.learning_rate=1e-9",
    ]
    config = load_config(None, [f"paths.root={prepared_root}", *TINY, *overrides])
    run_dir = prepared_root / "runs" / registry.run_id_for(config)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_TRAIN, "2", *sets(prepared_root, *overrides)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert crashed.returncode == 9, crashed.stderr[-2000:]
    assert len(pd.read_csv(run_dir / "history.csv")) == 2
    assert (run_dir / "backup").exists() and not (run_dir / "metrics.json").exists()
    result = train_process(prepared_root, *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming" in result.stdout
    assert not [
        line for line in result.stdout.splitlines() if line.startswith(("epoch   1/", "epoch   2/"))
    ]  # finished epochs are not redone
    history = pd.read_csv(run_dir / "history.csv").drop_duplicates("epoch", keep="last")
    assert history["val_noisy_accuracy"].nunique() == 1  # flat, as intended
    # Early stopping counted its patience across the crash: the run stops `patience` epochs after its best, the first.
    assert list(history["epoch"]) == [0, 1, 2]
    assert json.loads((run_dir / "metrics.json").read_text())["best_epoch"] == 1
    assert not (run_dir / "backup").exists()


def test_resumed_callbacks_carry_the_best_score_and_the_wait(tmp_path: Path):
    import keras

    history = pd.DataFrame(
        {"epoch": [0, 1, 2, 2], "val_noisy_accuracy": [0.5, 0.8, 0.7, 0.75]}
    )  # epoch 2 logged twice (redone)
    history.to_csv(tmp_path / "history.csv", index=False)
    assert fitting.resume_state(RunFolder(tmp_path), "val_noisy_accuracy") == (0.8, 1)
    config = load_config(None, ["train.patience=3"])
    data = types.SimpleNamespace(
        validation_series=np.zeros((1, 5, 9)),
        noisy_validation_series=np.zeros((1, 5, 9)),
        validation_labels=np.zeros(1),
    )
    from pipeline.runs.fitting import make_callbacks

    callbacks = make_callbacks(RunFolder(tmp_path), config, data, "val_noisy_accuracy", (0.8, 1))
    for callback in callbacks:
        if isinstance(callback, (keras.callbacks.EarlyStopping, keras.callbacks.ReduceLROnPlateau)):
            callback.on_train_begin()
            assert (callback.best, callback.wait) == (0.8, 1), type(callback).__name__


def test_the_cosine_schedule_warms_up_then_decays_to_one_percent():
    from pipeline.runs.fitting import cosine_rate

    rates = [cosine_rate(epoch, 0.01, 2, 6) for epoch in range(6)]
    assert rates[:2] == pytest.approx([0.005, 0.01])  # warmup
    assert rates[2] == pytest.approx(0.01) and rates[-1] == pytest.approx(0.0001)  # then from the top ...
    assert all(a > b for a, b in zip(rates[2:], rates[3:]))  # ... down to 1%
    from pipeline.runs.fitting import make_callbacks

    data = types.SimpleNamespace(
        validation_series=np.zeros((1, 5, 9)),
        noisy_validation_series=np.zeros((1, 5, 9)),
        validation_labels=np.zeros(1),
    )
    config = load_config(None, ["train.schedule=cosine", "train.warmup_epochs=2", "train.epochs=6"])
    (scheduler,) = [
        callback
        for callback in make_callbacks(RunFolder(Path("unused")), config, data, "val_noisy_accuracy", None)
        if isinstance(callback, (keras.callbacks.LearningRateScheduler, keras.callbacks.ReduceLROnPlateau))
    ]  # the cosine schedule replaces the halving on plateaus
    assert [scheduler.schedule(epoch, 0.0) for epoch in range(6)] == pytest.approx(
        [cosine_rate(epoch, config.train.learning_rate, 2, 6) for epoch in range(6)]
    )


def test_weight_averaging_validates_and_checkpoints_the_average(tmp_path: Path):
    """With train.ema, the backup sees the raw weights and the validation and checkpoint the average."""
    from pipeline.runs.fitting import make_callbacks

    overrides = ["train.ema=0.5", "train.epochs=2", "train.early_stopping=false", "train.learning_rate=0.05"]
    config = load_config(None, overrides)
    generator = np.random.default_rng(0)
    series, labels = generator.normal(size=(64, 5, 9)).astype("float32"), generator.integers(0, 3, 64)
    data = types.SimpleNamespace(validation_series=series, noisy_validation_series=series, validation_labels=labels)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 9)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    fitting.compile_model(model, config)
    callbacks = make_callbacks(RunFolder(tmp_path), config, data, "val_noisy_accuracy", None)
    names = [type(callback).__name__ for callback in callbacks[:4]]
    assert names == ["StopOnNaN", "BackupAndRestore", "SwapEMAWeights", "BothValidations"]

    class Probe(keras.callbacks.Callback):  # the model's weights at its place in the epoch-end order
        def on_epoch_end(self, epoch, logs=None):
            self.weights = self.model.get_weights()[0]

    before, after = Probe(), Probe()
    targets = keras.utils.to_categorical(labels, 3)
    model.fit(
        series,
        targets,
        validation_data=(series, targets),
        epochs=2,
        batch_size=8,
        callbacks=[*callbacks[:2], before, callbacks[2], after, *callbacks[3:]],
        verbose=0,
    )
    checkpoint = keras.models.load_model(tmp_path / "checkpoint.keras").get_weights()[0]
    np.testing.assert_allclose(checkpoint, after.weights)  # the last epoch's average, swapped in before the checkpoint
    assert not np.allclose(after.weights, before.weights, atol=1e-4)  # ... which differs from the last step's weights


def test_select_on_clean_with_mixed_precision(prepared_root: Path):
    overrides = ["train.select_on=clean", "train.mixed_precision=true", "train.epochs=2"]
    result = train_process(prepared_root, *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = (
        prepared_root
        / "runs"
        / registry.run_id_for(load_config(None, [f"paths.root={prepared_root}", *TINY, *overrides]))
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = pd.read_csv(run_dir / "history.csv")
    assert (
        metrics["monitor"] == "val_clean_accuracy"
        and metrics["best_epoch"] == int(history["val_clean_accuracy"].idxmax()) + 1
    )
    assert (
        metrics["selection"]["definition"]["select_on"] == "clean"
        and metrics["selection"]["definition"]["noise_level"] == 0.0
    )
    assert json.loads((run_dir / "environment.json").read_text())["precision_policy"] == "mixed_float16"
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.output.dtype == "float32"
    # The saved model is the best clean epoch's: recomputed here on the clean validation series.
    data = datasets.load_training_data(load_config(None, [f"paths.root={prepared_root}", *TINY, *overrides]))
    accuracy = (model.predict(data.validation_series, verbose=0).argmax(-1) == data.validation_labels).mean()
    assert accuracy == pytest.approx(history["val_clean_accuracy"].max(), abs=1e-6)


def test_a_run_trained_for_noise_consistency_predicts_and_evaluates_like_any_run(prepared_root: Path):
    overrides = ["regularization.consistency=0.5", "regularization.consistency_noise=[0.2, 1.0]", "train.epochs=2"]
    result = train_process(prepared_root, *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    run_id = registry.run_id_for(load_config(None, [f"paths.root={prepared_root}", *TINY, *overrides]))
    assert "_js0.5_" in run_id and f"training {run_id}" in result.stdout
    metrics = RunFolder(prepared_root / "runs" / run_id).metrics()
    assert metrics["validation"]["0.5"]["mean"] > 1 / 6  # learned something in two epochs of 6 classes
    history = pd.read_csv(prepared_root / "runs" / run_id / "history.csv")
    assert {"loss", "accuracy", "val_noisy_accuracy"} <= set(history.columns) and history["loss"].notna().all()
    root = f"SET=paths.root={prepared_root}"
    predicted = run_make("predict", f"RUN={run_id}", root)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    evaluated = run_make("evaluate", f"RUN={run_id}", root)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert (prepared_root / "reports" / run_id / "report.md").is_file()


def test_mirrored_strategy_on_two_logical_cpus(prepared_root: Path):
    result = train_process(
        prepared_root, "train.distribute=mirrored", "train.cpu_devices=2", "train.epochs=1", "train.batch_size=32"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 replica(s)" in result.stdout
    config = load_config(
        None,
        [
            f"paths.root={prepared_root}",
            *TINY,
            "train.distribute=mirrored",
            "train.cpu_devices=2",
            "train.epochs=1",
            "train.batch_size=32",
        ],
    )
    environment = json.loads((prepared_root / "runs" / registry.run_id_for(config) / "environment.json").read_text())
    assert environment["replicas"] == 2 and sum("CPU" in device for device in environment["devices"]) == 2


def test_nan_loss_stops_with_a_clear_error(prepared_root: Path):
    result = train_process(prepared_root, "train.optimizer=sgd", "train.learning_rate=1e38", "train.epochs=2")
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error:") and "NaN" in last_line
    config = load_config(
        None,
        [f"paths.root={prepared_root}", *TINY, "train.optimizer=sgd", "train.learning_rate=1e38", "train.epochs=2"],
    )
    run_dir = prepared_root / "runs" / registry.run_id_for(config)
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists()


def test_missing_competition_is_a_one_line_error(tmp_path: Path):
    result = train_process(tmp_path, "data.competition=nothing")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nothing" in errors[0]
