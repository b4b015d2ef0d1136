"""One training run, top to bottom: a config and a competition -> runs/<run_id>/ (`make train`'s
engine, pipeline/stages/train.py; cross-validation trains its folds with it too).

A run folder holds everything needed to trust and reuse it:
  config.json        the resolved Config (defaults + experiment + overrides)
  run.json           lineage: run id, experiment, competition, classes, channels, data card inputs
  environment.json   package versions, Keras backend and its devices, replicas, precision, XLA as Keras applied it
  history.csv        one row per epoch (loss, accuracy, clean and noisy validation accuracy, lr)
  model.keras        the best model (selected on noisy validation by default)
  split.json         a CV fold run only: the series it trained on, chose on (an inner fold of its
                     training part) and is scored on (its held-out fold), and their subjects
  metrics.json       written last: accuracy on the scored series (the validation split, or a fold
                     run's held-out fold) at several test-noise levels, host-side test scores
  logs/              TensorBoard
The run id is derived from the config (and the Keras backend, when it is not TensorFlow), so training the same config twice does nothing the second
time, and a killed run resumes from its last finished epoch (BackupAndRestore).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.data.datasets import (
    DATACARD,
    TrainingData,
    competition_folder,
    load_training_data,
    organizer_side,
    read_datacard,
    selection_definition,
    split_record,
)
from pipeline.data.scoring import accuracy_at_noise, predicted_classes
from pipeline.errors import UserError
from pipeline.files import short_hash, write_json_atomic
from pipeline.runtime import backend_name, distribution_scope, environment, peak_rss_mb, setup_devices
from pipeline.stages import tracking
from pipeline.stages.runs import (
    CHECKPOINT,
    HISTORY,
    LINEAGE,
    METRICS,
    PRUNED,
    SPLIT,
    model_tag,
    read_history,
    regularizer_tag,
    run_id_for,
    run_lock,
    write_run,
)


class TrainingError(UserError):
    """Training could not produce a usable model (e.g. the loss became NaN)."""


# ---- callbacks -----------------------------------------------------------------------------------


def adapted_schedule(config: Config, train_series: int) -> tuple[int, int]:
    """(batch size, early-stopping patience) for this much training data. A small competition (fewer
    than 4 batches an epoch) gets batches of about an eighth of its series (8 at least) and a patience
    of about 200 optimizer steps, so that an epoch of a few steps is not judged alone; other data
    keep the configured values."""
    batch, patience = config.train.batch_size, config.train.patience
    if train_series < 4 * batch:
        batch = max(8, train_series // 8)
        patience = max(patience, math.ceil(200 / math.ceil(train_series / batch)))
    return batch, patience


def compile_model(model: Any, config: Config) -> None:
    import keras

    train = config.train
    clipping: dict[str, Any] = {
        key: value for key, value in (("clipnorm", train.clipnorm), ("clipvalue", train.clipvalue)) if value
    }
    if train.ema:  # the moving average of the weights; the callbacks swap it in for validation and checkpoints
        clipping.update(use_ema=True, ema_momentum=train.ema)
    if train.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(train.learning_rate, weight_decay=train.weight_decay, **clipping)
    elif train.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(train.learning_rate, momentum=0.9, **clipping)
    else:
        optimizer = keras.optimizers.Adam(train.learning_rate, **clipping)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=train.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=True if train.xla else "auto",
        steps_per_execution=train.steps_per_execution,
    )


def resume_state(run_dir: Path, monitor: str) -> tuple[float, int] | None:
    """(best monitored score, epochs since it) of the epochs a killed run already finished, or None."""
    path = run_dir / HISTORY
    if not path.is_file() or path.stat().st_size == 0:
        return None
    history = read_history(run_dir, finished=False)
    if monitor not in history or not len(history):
        return None
    return float(history[monitor].max()), int(len(history) - 1 - history[monitor].to_numpy().argmax())


# ---- the stage -------------------------------------------------------------------------------------


def training_ids_hash(data: TrainingData) -> str:
    return short_hash([str(identifier) for identifier in data.train_ids], 16)


def why_not_reusable(run_dir: Path, config: Config) -> str:
    """Why a finished run no longer describes this config ("" when it does): the competition folder
    prepared again since, other training series, or (for a run from before 2026-12-02, which recorded
    no training ids) another model than this config builds now. Folds without subjects purge only
    the held-out block's neighbours since, and series longer than model.max_steps are shortened
    since, both under the same run id."""
    lineage = json.loads((run_dir / LINEAGE).read_text())
    if lineage.get("data_inputs") != read_datacard(config).get("inputs"):
        return f"trained on {competition_folder(config)} as it was prepared before"
    data = load_training_data(config)
    if "train_ids" in lineage:
        return "" if lineage["train_ids"] == training_ids_hash(data) else "trained on other training series"
    from pipeline.models.registry import downsample_factor

    if lineage.get("train_series") != len(data.train_series) * (1 + config.augment.noised_copies):
        return "trained on other training series (folds were cut otherwise before 2026-12-02)"
    if downsample_factor(config, data.train_series.shape[1]) != config.model.downsample:
        return f"built before series longer than model.max_steps={config.model.max_steps} were shortened"
    return ""


def train(config: Config, experiment: str = "", force: bool = False, callbacks: tuple[Any, ...] = ()) -> Path:
    """Train the configured model; returns the run folder (an existing finished run is reused).
    `callbacks`: extra Keras callbacks (the tuner's pruning), after the run's own.
    One writer at a time: a second process asking for the same run (two terminals, a notebook beside
    `make all`) waits for the first and then reuses the run it finished."""
    from filelock import Timeout

    run_dir = config.path("runs", run_id_for(config))
    lock = run_lock(run_dir)
    holder = lock.lock_file + ".pid"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = Path(holder).read_text().strip() if Path(holder).is_file() else "another process"
        print(f"{run_dir}: being trained by process {owner}; waiting for it to finish", flush=True)
        lock.acquire()
    try:
        Path(holder).write_text(f"{os.getpid()}\n")
        return train_locked(config, run_dir, experiment, force, callbacks)
    finally:
        lock.release()


def train_locked(config: Config, run_dir: Path, experiment: str, force: bool, callbacks: tuple[Any, ...]) -> Path:
    """`train` once this process is the run folder's only writer."""
    run_id = run_dir.name
    if (run_dir / METRICS).is_file() and not force:
        reason = why_not_reusable(run_dir, config)
        if not reason:
            print(f"{run_dir}: already trained with this config (use FORCE=1 to train again)")
            tracking.mirror_run(config, run_dir)  # a run trained while tracking was off appears now
            return run_dir
        print(f"{run_dir}: {reason}; training it again")  # the old run no longer describes this config
        force = True
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    resuming = (run_dir / "backup").exists()
    (run_dir / PRUNED).unlink(missing_ok=True)  # trained on now: no longer a pruned trial's leftover
    setup_devices(config)
    import keras

    from pipeline import models
    from pipeline.models import augment
    from pipeline.stages import callbacks as epoch_callbacks

    data = load_training_data(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", config.to_dict())
    if data.protocol is not None:  # a CV fold: which series trained, chose and are scored
        write_json_atomic(run_dir / SPLIT, split_record(data))
    train_series, train_labels = augment.noised_copies(
        data.train_series,
        data.train_labels,
        config.augment.noised_copies,
        config.augment.noised_copies_level,
        config.data.noise_profile,
        data.train_std,
        config.train.seed,
    )
    monitor = "val_noisy_accuracy" if config.train.select_on == "noisy" else "val_clean_accuracy"
    selection_series = data.noisy_validation_series if config.train.select_on == "noisy" else data.validation_series
    num_classes = len(data.classes)
    flat = data.train_series.reshape(-1, data.train_series.shape[-1])
    batch_size, patience = adapted_schedule(config, len(train_series))
    scope, replicas = distribution_scope(config)
    with scope():
        model = models.build_model(
            config,
            data.train_series.shape[1:],
            num_classes,
            flat.mean(0),
            flat.var(0),
            tuple(data.competition.channels),
        )
        compile_model(model, config)
    card_path = competition_folder(config) / DATACARD
    lineage = {
        "run_id": run_id,
        "experiment": experiment,
        "competition": config.data.competition,
        "model": model_tag(config),
        "regularizer": regularizer_tag(config),
        "classes": list(data.classes),
        "channels": list(data.competition.channels),
        "series_shape": list(data.train_series.shape[1:]),
        "train_std": data.train_std.tolist(),
        "data_inputs": json.loads(card_path.read_text()).get("inputs") if card_path.is_file() else None,
        "train_series": int(len(train_series)),
        "train_ids": training_ids_hash(data),
        "parameters": int(model.count_params()),
        "batch_size": batch_size,
        "patience": patience,
        "backend": backend_name(),
    }
    write_json_atomic(run_dir / LINEAGE, lineage)
    # What Keras really does: `jit_compile` is turned off for a model with a cuDNN layer on TensorFlow.
    write_json_atomic(
        run_dir / "environment.json",
        {
            **environment(),
            "replicas": replicas,
            "distribute": config.train.distribute,
            "xla": bool(model.jit_compile),
            "xla_asked": config.train.xla,
        },
    )
    print(
        f"{'resuming' if resuming else 'training'} {run_id}: {config.model.name} on {config.data.competition}, {len(train_series)} "
        f"series {tuple(data.train_series.shape[1:])}, {model.count_params():,} parameters, {replicas} replica(s)",
        flush=True,
    )
    verbose = config.train.verbose if config.train.verbose >= 0 else (1 if sys.stdout.isatty() else 0)
    started = time.perf_counter()
    model.nan_at = None
    with scope():  # Keras' distribution (JAX) shards the batches it sees inside its scope
        model.fit(
            train_series,
            keras.utils.to_categorical(train_labels, num_classes),
            validation_data=(selection_series, keras.utils.to_categorical(data.validation_labels, num_classes)),
            epochs=config.train.epochs,
            batch_size=batch_size,
            shuffle=True,
            callbacks=[
                *epoch_callbacks.make_callbacks(
                    run_dir, config, data, monitor, resume_state(run_dir, monitor), patience
                ),
                *callbacks,
            ],
            verbose=verbose,
        )
    seconds = time.perf_counter() - started
    if model.nan_at is not None:
        shutil.rmtree(run_dir / "backup", ignore_errors=True)  # a rerun must not resume from NaN weights
        raise TrainingError(
            f"{run_dir}: the loss became NaN or infinite; lower train.learning_rate or set train.clipnorm (e.g. 1.0)"
        )
    finish_run(run_dir, config, data, monitor, seconds)
    tracking.mirror_run(config, run_dir)
    return run_dir


def selection_score(model: Any, config: Config, data: TrainingData, fitted_on: int | None = None) -> dict[str, Any]:
    """The score "the best run" compares and a CV fold's score: accuracy on the scored series (a
    fold run's held-out fold, which chose nothing; else the validation split) at the selection's
    noise level, on noise draws shared by every run of the competition (seeded by data.seed, not the
    run's own seed). Recurrent fold runs, ensembles and peers are all scored by this one function.
    `fitted_on`: how many distinct series the model was fitted on (default: the training series);
    recorded with the counts chosen and scored on, for the paired test's held-out/training ratio."""
    definition = selection_definition(config, data)
    level = definition["noise_level"]
    table = accuracy_at_noise(
        model,
        data.scored_series,
        data.scored_labels,
        (level,),
        definition["draws"],
        definition["noise_profile"],
        data.train_std,
        definition["seed"],
    )
    series = {
        "trained_on": len(data.train_series) if fitted_on is None else fitted_on,
        "chosen_on": 0 if fitted_on is not None else len(data.validation_series),
        "scored_on": len(data.scored_series),
    }
    return {"definition": definition, "score": table[f"{level:g}"]["mean"], "series": series}


def validation_scores(model: Any, config: Config, data: TrainingData) -> dict[str, Any]:
    """Accuracy on the scored series (see selection_score) at each of train.noise_levels (mean and
    spread over draws)."""
    train = config.train
    return accuracy_at_noise(
        model,
        data.scored_series,
        data.scored_labels,
        train.noise_levels,
        train.noise_seeds,
        config.data.noise_profile,
        data.train_std,
        train.seed,
    )


def test_scores(model: Any, config: Config, data: TrainingData) -> dict[str, Any] | None:
    """The organizer-side test scores (data/private), reported beside a run; None where there is no answer key."""
    host = organizer_side(config, data.competition, data.classes)
    if host is None:
        return None
    train = config.train
    return {
        "note": "organizer-side scores from data/private; reported, never used for training or selection",
        "competition_file": float((predicted_classes(model, data.competition.test.series) == host.file_labels).mean()),
        "noise_levels": accuracy_at_noise(
            model,
            host.clean_series,
            host.labels,
            train.noise_levels,
            train.noise_seeds,
            config.data.noise_profile,
            host.noise_unit,
            train.seed + 99,
        ),
    }


def finish_run(run_dir: Path, config: Config, data: TrainingData, monitor: str, seconds: float) -> Path:
    """Load the best checkpoint, score it, and write model.keras and metrics.json (last: it marks the run done)."""
    import keras

    from pipeline import models

    keras.mixed_precision.set_global_policy("float32")
    best = models.load_model(str(run_dir / CHECKPOINT))
    history = read_history(run_dir, finished=False)  # its checksum is recorded by write_run below
    train = config.train
    metrics: dict[str, Any] = {
        "monitor": monitor,
        "best_epoch": int(history.loc[history[monitor].idxmax(), "epoch"]) + 1
        if train.early_stopping
        else int(history["epoch"].max()) + 1,
        "epochs_run": int(len(history)),
        "best_validation": float(history[monitor].max() if train.early_stopping else history[monitor].iloc[-1]),
        "train_seconds": round(seconds, 1),
        "peak_rss_mb": peak_rss_mb(),
    }
    if config.cv.refit:  # nothing was held out: no validation score, and never a candidate for "the best run"
        metrics.update(validation={}, selection=None, best_validation=None, note=data.validation)
    else:
        metrics["validation"] = validation_scores(best, config, data)
        metrics["selection"] = selection_score(best, config, data)
    test = test_scores(best, config, data)
    if test is not None:
        metrics["test"] = test
    write_run(run_dir, best, metrics)
    summary = (
        "  ".join(f"{level}: {value['mean']:.3f}" for level, value in metrics["validation"].items())
        or "none (a refit: nothing held out)"
    )
    print(
        f"done {run_dir.name} in {seconds:.0f}s, best epoch {metrics['best_epoch']}; validation accuracy by noise level  {summary}"
    )
    if test is not None:
        print(test_summary(test))
    return run_dir


def test_summary(test: dict[str, Any]) -> str:
    levels = "  ".join(f"{level}: {value['mean']:.3f}" for level, value in test["noise_levels"].items())
    return f"host-side test accuracy by noise level  {levels}; on the competition's test file {test['competition_file']:.3f}"
