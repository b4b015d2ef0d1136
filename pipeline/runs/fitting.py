"""Fitting a run: the batch size and patience for its data, the optimizer and loss it compiles with,
the state a killed run resumes from, and what runs around every epoch (this project's Keras
callbacks and the list a run trains with, `make_callbacks`). Module-level classes, so each can be
read and tested alone.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from pipeline.runtime import import_keras

import_keras()  # on the TensorFlow backend, TensorFlow first, without its start-up noise

import keras
import numpy as np

from pipeline.config import Config
from pipeline.data.datasets import TrainingData
from pipeline.data.scoring import predicted_classes
from pipeline.log import log
from pipeline.runs.folder import RunFolder
from pipeline.runtime import tensorflow_available


class BothValidations(keras.callbacks.Callback):
    """Keras scores one validation set (the one selection uses); this names it `monitor` and scores
    the other one too, as `other_name`: clean and noisy validation accuracy side by side."""

    def __init__(self, monitor: str, other_name: str, other_series: np.ndarray, labels: np.ndarray):
        super().__init__()
        self.monitor, self.other_name, self.other_series, self.labels = monitor, other_name, other_series, labels

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        logs[self.monitor] = logs.get("val_accuracy", float("nan"))
        logs[self.other_name] = float((predicted_classes(self.model, self.other_series) == self.labels).mean())


class EpochSummary(keras.callbacks.Callback):
    """One line per epoch, readable in a log file. With `bar` (a terminal), a progress bar over the
    epoch's batches with the time left, which the epoch's line then replaces: one line per epoch."""

    def __init__(self, epochs: int, bar: bool = False):
        super().__init__()
        self.epochs, self.bar, self.progress = epochs, bar, None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()
        if self.bar:
            from tqdm import tqdm

            steps = self.params.get("steps")
            self.progress = tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch", leave=False)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.progress is not None:
            self.progress.update(1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.progress is not None:
            self.progress.close()  # leave=False: the bar is erased, the line below takes its place
            self.progress = None
        logs = logs or {}
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        log.info(
            f"epoch {epoch + 1:3d}/{self.epochs}  loss {logs.get('loss', float('nan')):.4f}  acc {logs.get('accuracy', float('nan')):.4f}"
            f"  val_noisy {logs.get('val_noisy_accuracy', float('nan')):.4f}  val_clean {logs.get('val_clean_accuracy', float('nan')):.4f}"
            f"  lr {learning_rate:.1e}  {time.perf_counter() - self.started:.1f}s",
        )


class LiveCurves(keras.callbacks.Callback):
    """Each epoch's logs into MLflow as the epoch ends (pipeline.runs.tracking.log_epoch), where
    tracking is on and MLflow installed: `make ui` shows the run's curves while it trains."""

    def __init__(self, config: Config, run_name: str):
        super().__init__()
        self.config, self.run_name, self.live = config, run_name, {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from pipeline.runs import tracking

        tracking.log_epoch(self.config, self.live, self.run_name, self.config.data.competition, epoch, logs or {})


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """Stop at a NaN or infinite loss and record the batch on the model (`model.nan_at`), so that the
    stage can refuse the run with a clear message instead of saving NaN weights."""

    # Checked in Keras' callback thread: a per-batch hook that is not async-safe makes every
    # step wait for the device (measured on a GPU: see docs/gpu.md).
    async_safe = True

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(keras.ops.convert_to_numpy(loss))):
            self.model.nan_at = batch
        super().on_batch_end(batch, logs)


def resumable(callback: Any, resumed: tuple[float, int] | None) -> Any:
    """Early stopping and the LR schedule pick up where a killed run stopped: its best score and how
    many epochs it has waited since (Keras would start both from scratch after a resume)."""
    if resumed is None:
        return callback
    begin = callback.on_train_begin

    def on_train_begin(logs: dict | None = None) -> None:
        begin(logs)
        callback.best, callback.wait = resumed

    callback.on_train_begin = on_train_begin
    return callback


def cosine_rate(epoch: int, base: float, warmup: int, epochs: int) -> float:
    """The learning rate of `epoch` (from 0): linear warmup to `base` over `warmup` epochs, then a
    cosine decay to 1% of `base` at the last epoch."""
    if epoch < warmup:
        return base * (epoch + 1) / warmup
    progress = (epoch - warmup) / max(1, epochs - 1 - warmup)
    floor = 0.01 * base
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_callbacks(
    folder: RunFolder,
    config: Config,
    data: TrainingData,
    monitor: str,
    resumed: tuple[float, int] | None,
    patience: int | None = None,
) -> list[Any]:
    """The callbacks of one run. `resumed`: (best monitored score, epochs since it) of the epochs a
    killed run already finished; `patience`: early stopping's (default: train.patience)."""
    train = config.train
    noisy = train.select_on == "noisy"
    both = BothValidations(
        monitor,
        "val_clean_accuracy" if noisy else "val_noisy_accuracy",
        data.validation_series if noisy else data.noisy_validation_series,
        data.validation_labels,
    )
    callbacks = [
        both,
        StopOnNaN(),
        keras.callbacks.BackupAndRestore(str(folder.backup_dir), delete_checkpoint=True),
        # With early stopping off, the run keeps its last epoch (that is what "no early stopping" means).
        keras.callbacks.ModelCheckpoint(
            str(folder.checkpoint_file),
            monitor=monitor,
            mode="max",
            save_best_only=train.early_stopping,
            initial_value_threshold=resumed[0] if resumed and train.early_stopping else None,
        ),
        keras.callbacks.LearningRateScheduler(
            lambda epoch, rate: cosine_rate(epoch, train.learning_rate, train.warmup_epochs, train.epochs)
        )
        if train.schedule == "cosine"
        else resumable(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor, mode="max", factor=0.5, patience=train.reduce_lr_patience, min_lr=1e-5, verbose=0
            ),
            resumed,
        ),
        keras.callbacks.CSVLogger(str(folder.history_file), append=True),
        LiveCurves(config, folder.name),
        # train.verbose -1 (the default): the project's line per epoch, with a bar on a terminal (Keras' off)
        EpochSummary(train.epochs, bar=train.verbose < 0 and sys.stdout.isatty()),
    ]
    if tensorflow_available():  # Keras' TensorBoard callback writes through tf.summary, on any backend
        callbacks.insert(-1, keras.callbacks.TensorBoard(str(folder.logs_dir), write_graph=False, update_freq="epoch"))
    else:
        log.info("no TensorBoard logs: Keras writes them through TensorFlow, which is not installed here")
    if train.ema:
        # The average is swapped into the model at each epoch's end, after the backup saved the raw
        # weights (so a resumed run continues from them) and before the validation and the checkpoint.
        callbacks.remove(both)
        callbacks.insert(2, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        callbacks.insert(3, both)
    if train.early_stopping:
        callbacks.insert(
            4 + bool(train.ema),  # after the checkpoint
            resumable(
                keras.callbacks.EarlyStopping(
                    monitor=monitor, mode="max", patience=patience or train.patience, restore_best_weights=True
                ),
                resumed,
            ),
        )
    return callbacks


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


def resume_state(folder: RunFolder, monitor: str) -> tuple[float, int] | None:
    """(best monitored score, epochs since it) of the epochs a killed run already finished, or None."""
    path = folder.history_file
    if not path.is_file() or path.stat().st_size == 0:
        return None
    history = folder.history(finished=False)
    if monitor not in history or not len(history):
        return None
    return float(history[monitor].max()), int(len(history) - 1 - history[monitor].to_numpy().argmax())
