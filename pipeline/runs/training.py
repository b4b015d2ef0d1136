"""One training run, top to bottom: a config and a competition -> runs/<run_id>/ (`make train`,
pipeline/stages/train.py; cross-validation trains its folds with it too). Its files:
pipeline/runs/folder.py.

The run id is derived from the config (and the Keras backend), so training
the same config twice does nothing the second time, and a killed run resumes from its last finished
epoch (BackupAndRestore).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config
from pipeline.data.datasets import TrainingData, competition_folder, load_training_data, read_datacard, split_record
from pipeline.errors import UserError
from pipeline.files import short_hash
from pipeline.log import log
from pipeline.runs import tracking
from pipeline.runs.folder import Lineage, RunFolder
from pipeline.runs.registry import model_tag, regularizer_tag, run_id_for
from pipeline.runs.scoring import selection_score, test_scores, test_summary, validation_scores
from pipeline.runtime import backend_name, distribution_scope, environment, peak_rss_mb, setup_devices


class TrainingError(UserError):
    """Training could not produce a usable model (e.g. the loss became NaN)."""


def training_ids_hash(data: TrainingData) -> str:
    return short_hash([str(identifier) for identifier in data.train_ids], 16)


def why_not_reusable(folder: RunFolder, config: Config, data: TrainingData) -> str:
    """Why a finished run no longer describes this config ("" when it does): the competition folder
    prepared again since, or other training series (the ids it recorded are not this config's)."""
    lineage = folder.lineage()
    if lineage.data_inputs != read_datacard(config).get("inputs"):
        return f"trained on {competition_folder(config)} as it was prepared before"
    if lineage.train_ids != training_ids_hash(data):
        return "trained on other training series"
    return ""


@dataclass(frozen=True)
class Plan:
    """What a run fits on and how: the training series with their noised copies, the score it selects
    on, and the batch size and patience adapted to the data."""

    series: np.ndarray
    labels: np.ndarray
    monitor: str
    batch_size: int
    patience: int


def train(config: Config, experiment: str = "", force: bool = False, callbacks: tuple[Any, ...] = ()) -> Path:
    """Train the configured model; returns the run folder (an existing finished run is reused).
    `callbacks`: extra Keras callbacks (the tuner's pruning), after the run's own. One writer at a
    time: a second process asking for the same run (two terminals, a notebook beside `make all`)
    waits for the first and then reuses the run it finished."""
    from pipeline.models.registry import own_settings

    own_settings(config)  # an architecture's settings table with a wrong key fails before anything is read
    folder = RunFolder.of(config, run_id_for(config))
    with folder.writing():
        data = load_training_data(config)  # once: the reuse check and the training share it
        if not reused(folder, config, data, force):
            setup_devices(config)
            plan = plan_for(config, data)
            model, scope, replicas = build(config, data)
            folder.start(config.to_dict(), lineage_for(folder, config, data, plan, model, experiment))
            folder.write_environment(run_environment(config, model, replicas))
            if data.protocol is not None:  # a CV fold: which series trained, chose and are scored
                folder.write_split(split_record(data))
            announce(folder, config, data, plan, model, replicas)
            seconds = fit(model, scope, folder, config, data, plan, callbacks)
            finish_run(folder, config, data, plan.monitor, seconds)
    tracking.mirror_run(config, folder.path)  # once; a reused run trained while tracking was off appears now
    return folder.path


def reused(folder: RunFolder, config: Config, data: TrainingData, force: bool) -> bool:
    """True when the finished run describes this config; otherwise the folder is cleared for a new
    run (forced, or no longer this config's) or left to resume (a killed run's backup)."""
    if folder.finished and not force:
        reason = why_not_reusable(folder, config, data)
        if not reason:
            log.info(f"{folder.path}: already trained with this config (use FORCE=1 to train again)")
            return True
        log.info(f"{folder.path}: {reason}; training it again")  # the old run no longer describes this config
        force = True
    if force and folder.path.exists():
        shutil.rmtree(folder.path)
    folder.pruned_file.unlink(missing_ok=True)  # trained on now: no longer a pruned trial's leftover
    return False


def plan_for(config: Config, data: TrainingData) -> Plan:
    from pipeline.models import augment
    from pipeline.runs import fitting

    series, labels = augment.noised_copies(
        data.train_series,
        data.train_labels,
        config.augment.noised_copies,
        config.augment.noised_copies_level,
        config.data.noise_profile,
        data.train_std,
        config.train.seed,
    )
    monitor = "val_noisy_accuracy" if config.train.select_on == "noisy" else "val_clean_accuracy"
    return Plan(series, labels, monitor, *fitting.adapted_schedule(config, len(series)))


def build(config: Config, data: TrainingData) -> tuple[Any, Any, int]:
    """The compiled model, the distribution scope it lives in, and the number of replicas."""
    from pipeline import models
    from pipeline.runs import fitting

    flat = data.train_series.reshape(-1, data.train_series.shape[-1])
    scope, replicas = distribution_scope(config)
    with scope():
        model = models.build_model(
            config,
            data.train_series.shape[1:],
            len(data.classes),
            flat.mean(0),
            flat.var(0),
            tuple(data.competition.channels),
        )
        fitting.compile_model(model, config)
    return model, scope, replicas


def lineage_for(
    folder: RunFolder, config: Config, data: TrainingData, plan: Plan, model: Any, experiment: str
) -> Lineage:
    return Lineage(
        run_id=folder.name,
        experiment=experiment,
        competition=config.data.competition,
        model=model_tag(config),
        regularizer=regularizer_tag(config),
        classes=list(data.classes),
        channels=list(data.competition.channels),
        series_shape=list(data.train_series.shape[1:]),
        train_std=data.train_std.tolist(),
        data_inputs=read_datacard(config).get("inputs"),
        train_series=int(len(plan.series)),
        train_ids=training_ids_hash(data),
        parameters=int(model.count_params()),
        batch_size=plan.batch_size,
        patience=plan.patience,
        backend=backend_name(),
    )


def run_environment(config: Config, model: Any, replicas: int) -> dict[str, Any]:
    """What Keras really does: `jit_compile` is turned off for a model with a cuDNN layer on TensorFlow."""
    return {
        **environment(),
        "replicas": replicas,
        "distribute": config.train.distribute,
        "xla": bool(model.jit_compile),
        "xla_asked": config.train.xla,
    }


def announce(folder: RunFolder, config: Config, data: TrainingData, plan: Plan, model: Any, replicas: int) -> None:
    log.info(
        f"{'resuming' if folder.backup_dir.exists() else 'training'} {folder.name}: {config.model.name} on "
        f"{config.data.competition}, {len(plan.series)} series {tuple(data.train_series.shape[1:])}, "
        f"{model.count_params():,} parameters, {replicas} replica(s)",
    )


def fit(
    model: Any,
    scope: Any,
    folder: RunFolder,
    config: Config,
    data: TrainingData,
    plan: Plan,
    callbacks: tuple[Any, ...],
) -> float:
    """Fit the model on the plan, choosing on the validation series; the seconds it took. A loss that
    became NaN ends the run with a TrainingError and no backup to resume from."""
    import keras

    from pipeline.runs import fitting

    classes = len(data.classes)
    chosen_on = data.noisy_validation_series if config.train.select_on == "noisy" else data.validation_series
    verbose = max(config.train.verbose, 0)  # Keras' own bar only when asked: EpochSummary prints each epoch once
    resumed = fitting.resume_state(folder, plan.monitor)
    started = time.perf_counter()
    model.nan_at = None
    with scope():  # Keras' distribution (JAX) shards the batches it sees inside its scope
        model.fit(
            plan.series,
            keras.utils.to_categorical(plan.labels, classes),
            validation_data=(chosen_on, keras.utils.to_categorical(data.validation_labels, classes)),
            epochs=config.train.epochs,
            batch_size=plan.batch_size,
            shuffle=True,
            callbacks=[
                *fitting.make_callbacks(folder, config, data, plan.monitor, resumed, plan.patience),
                *callbacks,
            ],
            verbose=verbose,
        )
    if model.nan_at is not None:
        shutil.rmtree(folder.backup_dir, ignore_errors=True)  # a rerun must not resume from NaN weights
        raise TrainingError(
            f"{folder.path}: the loss became NaN or infinite; lower train.learning_rate or set train.clipnorm (e.g. 1.0)"
        )
    return time.perf_counter() - started


def finish_run(folder: RunFolder, config: Config, data: TrainingData, monitor: str, seconds: float) -> None:
    """Load the best checkpoint, score it, and write model.keras and metrics.json (last: it marks the run done)."""
    import keras

    from pipeline import models

    keras.mixed_precision.set_global_policy("float32")
    best = models.load_model(str(folder.checkpoint_file))
    history = folder.history(finished=False)  # its checksum is recorded when the folder finishes
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
    folder.finish(best, metrics)
    summary = (
        "  ".join(f"{level}: {value['mean']:.3f}" for level, value in metrics["validation"].items())
        or "none (a refit: nothing held out)"
    )
    log.info(
        f"done {folder.name} in {seconds:.0f}s, best epoch {metrics['best_epoch']}; validation accuracy by noise level  {summary}"
    )
    if test is not None:
        log.info(test_summary(test))
