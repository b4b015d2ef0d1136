"""Stage 3, `make train [EXP=experiments/<name>.toml] [MODEL=...] [SET=...]`: a competition -> runs/<run_id>/.

A run folder holds everything needed to trust and reuse it:
  config.json        the resolved Config (defaults + experiment + overrides)
  run.json           lineage: run id, experiment, competition, classes, channels, data card inputs
  environment.json   package versions, Keras backend and its devices, replicas, precision, XLA as Keras applied it
  history.csv        one row per epoch (loss, accuracy, clean and noisy validation accuracy, lr)
  model.keras        the best model (selected on noisy validation by default)
  metrics.json       written last: validation accuracy at several test-noise levels, host-side test scores
  logs/              TensorBoard
The run id is derived from the config (and the Keras backend, when it is not TensorFlow), so training the same config twice does nothing the second
time, and a killed run resumes from its last finished epoch (BackupAndRestore).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cli import overrides, run_stage, stage_parser
from pipeline.config import Config, ConfigError, load_config
from pipeline.datasets import DATACARD, TrainingData, competition_folder, cv_definition, fold_config, load_training_data, open_competition, organizer_side, read_datacard, selection_definition, too_small_to_validate
from pipeline.errors import UserError
from pipeline.files import atomic_files, write_json_atomic
from pipeline.runs import CHECKPOINT, HISTORY, LINEAGE, METRICS, MODEL, PRUNED, cv_id_for, model_tag, regularizer_tag, run_id_for
from pipeline.runtime import BackendError, backend_devices, backend_name, require_backend, tensorflow_available
from pipeline.scoring import accuracy_at_noise, predicted_classes


class TrainingError(UserError):
    """Training could not produce a usable model (e.g. the loss became NaN)."""


# ---- devices and determinism -----------------------------------------------------------------------


def split_cpu(devices: int) -> None:
    """Split the CPU into `devices` logical devices (to test multi-device training without a GPU).

    It must happen before the backend initializes its devices; a process where that already
    happened with another count is refused rather than silently trained on one replica."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * devices)
        except RuntimeError:
            pass  # initialized earlier in this process: fine if it already has the wanted split (checked below)
        found = len(tf.config.list_logical_devices("CPU"))
    elif backend == "jax":
        import jax

        try:
            jax.config.update("jax_num_cpu_devices", devices)
        except RuntimeError:
            pass  # backends already initialized: checked below
        found = len(jax.devices("cpu"))
    else:
        raise BackendError(f"train.cpu_devices needs KERAS_BACKEND=tensorflow or jax; this process runs KERAS_BACKEND={backend}")
    if found != devices:
        raise ConfigError(f"train.cpu_devices={devices} cannot take effect: this process already set up {found} CPU device(s); run the stage in a fresh process")


def setup_devices(config: Config) -> None:
    """Split the CPU if asked (before any backend op), seed everything, set the precision policy."""
    import keras

    train = config.train
    if train.cpu_devices > 1:
        split_cpu(train.cpu_devices)
    keras.utils.set_random_seed(train.seed)
    if train.deterministic:
        require_backend("train.deterministic (TensorFlow's op determinism)", "tensorflow")
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if train.mixed_precision else "float32")


def distribution_scope(config: Config) -> tuple[Callable[[], Any], int]:
    """(a function giving the context to build, compile and fit in, replicas): data parallelism over the visible devices.

    `mirrored` is TensorFlow's MirroredStrategy; `data_parallel` is Keras' own distribution API
    (`keras.distribution.DataParallel`, JAX backend). The batch size stays global in both."""
    distribute = config.train.distribute
    if distribute == "mirrored":
        require_backend("train.distribute=mirrored (tf.distribute.MirroredStrategy)", "tensorflow")
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        return strategy.scope, strategy.num_replicas_in_sync
    if distribute == "data_parallel":
        require_backend("train.distribute=data_parallel (keras.distribution.DataParallel)", "jax")
        import keras

        distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
        return distribution.scope, len(distribution.device_mesh.devices.flatten())
    return contextlib.nullcontext, 1


def environment() -> dict[str, Any]:
    import keras
    import sklearn

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": {"keras": keras.__version__, "numpy": np.__version__, "pandas": pd.__version__, "scikit-learn": sklearn.__version__},
        **backend_devices(),
        "precision_policy": keras.mixed_precision.global_policy().name,
    }


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


def make_callbacks(run_dir: Path, config: Config, data: TrainingData, monitor: str, resumed: tuple[float, int] | None, patience: int | None = None) -> list[Any]:
    """`resumed`: (best monitored score, epochs since it) of the epochs a killed run already finished;
    `patience`: early stopping's (default: train.patience)."""
    import keras

    train = config.train
    other_series = data.validation_series if config.train.select_on == "noisy" else data.noisy_validation_series
    other_name = "val_clean_accuracy" if config.train.select_on == "noisy" else "val_noisy_accuracy"

    class BothValidations(keras.callbacks.Callback):
        """Keras scores one validation set; this names it and scores the other one too."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs is None:
                return
            logs[monitor] = logs.get("val_accuracy", float("nan"))
            logs[other_name] = float((predicted_classes(self.model, other_series) == data.validation_labels).mean())

    class EpochSummary(keras.callbacks.Callback):
        """One line per epoch, readable in a log file."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            print(
                f"epoch {epoch + 1:3d}/{train.epochs}  loss {logs.get('loss', float('nan')):.4f}  acc {logs.get('accuracy', float('nan')):.4f}"
                f"  val_noisy {logs.get('val_noisy_accuracy', float('nan')):.4f}  val_clean {logs.get('val_clean_accuracy', float('nan')):.4f}"
                f"  lr {learning_rate:.1e}  {time.perf_counter() - self.started:.1f}s",
                flush=True,
            )

    class StopOnNaN(keras.callbacks.TerminateOnNaN):
        # Checked in Keras' callback thread: a per-batch hook that is not async-safe makes every
        # step wait for the device (measured on a GPU: see the README's GPU section).
        async_safe = True

        def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(keras.ops.convert_to_numpy(loss))):
                self.model.nan_at = batch
            super().on_batch_end(batch, logs)

    def resumable(callback: Any) -> Any:
        """Early stopping and the LR schedule pick up where a killed run stopped: its best score and
        how many epochs it has waited since (Keras would start both from scratch after a resume)."""
        if resumed is None:
            return callback
        begin = callback.on_train_begin

        def on_train_begin(logs: dict | None = None) -> None:
            begin(logs)
            callback.best, callback.wait = resumed

        callback.on_train_begin = on_train_begin
        return callback

    callbacks = [
        BothValidations(),
        StopOnNaN(),
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=True),
        # With early stopping off, the run keeps its last epoch (that is what "no early stopping" means).
        keras.callbacks.ModelCheckpoint(str(run_dir / CHECKPOINT), monitor=monitor, mode="max", save_best_only=train.early_stopping, initial_value_threshold=resumed[0] if resumed and train.early_stopping else None),
        resumable(keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="max", factor=0.5, patience=train.reduce_lr_patience, min_lr=1e-5, verbose=0)),
        keras.callbacks.CSVLogger(str(run_dir / HISTORY), append=True),
        EpochSummary(),
    ]
    if tensorflow_available():  # Keras' TensorBoard callback writes through tf.summary, on any backend
        callbacks.insert(-1, keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, update_freq="epoch"))
    else:
        print("no TensorBoard logs: Keras writes them through TensorFlow, which is not installed here", flush=True)
    if train.early_stopping:
        callbacks.insert(4, resumable(keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=patience or train.patience, restore_best_weights=True)))
    return callbacks


def compile_model(model: Any, config: Config) -> None:
    import keras

    train = config.train
    clipping = {key: value for key, value in (("clipnorm", train.clipnorm), ("clipvalue", train.clipvalue)) if value}
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
    history = pd.read_csv(path).drop_duplicates("epoch", keep="last").reset_index(drop=True)
    if monitor not in history or not len(history):
        return None
    return float(history[monitor].max()), int(len(history) - 1 - history[monitor].to_numpy().argmax())


# ---- the stage -------------------------------------------------------------------------------------


def trained_on_current_data(run_dir: Path, config: Config) -> bool:
    """Whether a finished run was trained on the competition folder as it is prepared now."""
    return json.loads((run_dir / LINEAGE).read_text()).get("data_inputs") == read_datacard(config).get("inputs")


def train(config: Config, experiment: str = "", force: bool = False, callbacks: tuple[Any, ...] = ()) -> Path:
    """Train the configured model; returns the run folder (an existing finished run is reused).
    `callbacks`: extra Keras callbacks (the tuner's pruning), after the run's own."""
    run_id = run_id_for(config)
    run_dir = config.path("runs", run_id)
    if (run_dir / METRICS).is_file() and not force:
        if trained_on_current_data(run_dir, config):
            print(f"{run_dir}: already trained with this config (use FORCE=1 to train again)")
            return run_dir
        # The same config on data prepared again since: the old run no longer describes this data.
        print(f"{run_dir}: trained on {competition_folder(config)} as it was prepared before; training it again")
        force = True
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    resuming = (run_dir / "backup").exists()
    (run_dir / PRUNED).unlink(missing_ok=True)  # trained on now: no longer a pruned trial's leftover
    setup_devices(config)
    import keras

    from pipeline import augment, models

    data = load_training_data(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", config.to_dict())
    train_series, train_labels = augment.noised_copies(
        data.train_series, data.train_labels, config.augment.noised_copies, config.augment.noised_copies_level, config.data.noise_profile, data.train_std, config.train.seed
    )
    monitor = "val_noisy_accuracy" if config.train.select_on == "noisy" else "val_clean_accuracy"
    selection_series = data.noisy_validation_series if config.train.select_on == "noisy" else data.validation_series
    num_classes = len(data.classes)
    flat = data.train_series.reshape(-1, data.train_series.shape[-1])
    batch_size, patience = adapted_schedule(config, len(train_series))
    scope, replicas = distribution_scope(config)
    with scope():
        model = models.build_model(config, data.train_series.shape[1:], num_classes, flat.mean(0), flat.var(0))
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
        "parameters": int(model.count_params()),
        "batch_size": batch_size,
        "patience": patience,
        "backend": backend_name(),
    }
    write_json_atomic(run_dir / LINEAGE, lineage)
    # What Keras really does: `jit_compile` is turned off for a model with a cuDNN layer on TensorFlow.
    write_json_atomic(run_dir / "environment.json", {**environment(), "replicas": replicas, "distribute": config.train.distribute, "xla": bool(model.jit_compile), "xla_asked": config.train.xla})
    print(f"{'resuming' if resuming else 'training'} {run_id}: {config.model.name} on {config.data.competition}, {len(train_series)} series {tuple(data.train_series.shape[1:])}, {model.count_params():,} parameters, {replicas} replica(s)", flush=True)
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
            callbacks=[*make_callbacks(run_dir, config, data, monitor, resume_state(run_dir, monitor), patience), *callbacks],
            verbose=verbose,
        )
    seconds = time.perf_counter() - started
    if model.nan_at is not None:
        shutil.rmtree(run_dir / "backup", ignore_errors=True)  # a rerun must not resume from NaN weights
        raise TrainingError(f"{run_dir}: the loss became NaN or infinite; lower train.learning_rate or set train.clipnorm (e.g. 1.0)")
    return finish_run(run_dir, config, data, monitor, seconds)


def selection_score(model: Any, config: Config, data: TrainingData) -> dict[str, Any]:
    """The score "the best run" compares: validation accuracy at the selection's noise level, on noise
    draws shared by every run of the competition (seeded by data.seed, not the run's own seed)."""
    definition = selection_definition(config, data)
    level = definition["noise_level"]
    table = accuracy_at_noise(model, data.validation_series, data.validation_labels, (level,), definition["draws"], definition["noise_profile"], data.train_std, definition["seed"])
    return {"definition": definition, "score": table[f"{level:g}"]["mean"]}


def finish_run(run_dir: Path, config: Config, data: TrainingData, monitor: str, seconds: float) -> Path:
    """Load the best checkpoint, score it, and write model.keras and metrics.json (last: it marks the run done)."""
    import keras

    from pipeline import models

    keras.mixed_precision.set_global_policy("float32")
    best = models.load_model(str(run_dir / CHECKPOINT))
    history = pd.read_csv(run_dir / HISTORY).drop_duplicates("epoch", keep="last")
    train, profile = config.train, config.data.noise_profile
    metrics: dict[str, Any] = {
        "monitor": monitor,
        "best_epoch": int(history.loc[history[monitor].idxmax(), "epoch"]) + 1 if train.early_stopping else int(history["epoch"].max()) + 1,
        "epochs_run": int(len(history)),
        "best_validation": float(history[monitor].max() if train.early_stopping else history[monitor].iloc[-1]),
        "train_seconds": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if config.cv.refit:  # nothing was held out: no validation score, and never a candidate for "the best run"
        metrics.update(validation={}, selection=None, best_validation=None, note=data.validation)
    else:
        metrics["validation"] = accuracy_at_noise(best, data.validation_series, data.validation_labels, train.noise_levels, train.noise_seeds, profile, data.train_std, train.seed)
        metrics["selection"] = selection_score(best, config, data)
    host = organizer_side(config, data.competition, data.classes)
    if host is not None:
        metrics["test"] = {
            "note": "organizer-side scores from data/private; reported, never used for training or selection",
            "competition_file": float((predicted_classes(best, data.competition.test.series) == host.file_labels).mean()),
            "noise_levels": accuracy_at_noise(best, host.clean_series, host.labels, train.noise_levels, train.noise_seeds, profile, host.noise_unit, train.seed + 99),
        }
    models.save_model(best, run_dir / MODEL)
    write_json_atomic(run_dir / METRICS, metrics)
    summary = "  ".join(f"{level}: {value['mean']:.3f}" for level, value in metrics["validation"].items()) or "none (a refit: nothing held out)"
    print(f"done {run_dir.name} in {seconds:.0f}s, best epoch {metrics['best_epoch']}; validation accuracy by noise level  {summary}")
    if host is not None:
        test = "  ".join(f"{level}: {value['mean']:.3f}" for level, value in metrics["test"]["noise_levels"].items())
        print(f"host-side test accuracy by noise level  {test}; on the competition's test file {metrics['test']['competition_file']:.3f}")
    return run_dir


# ---- cross-validation (make cv; make train on a competition too small to validate on) -----------


def summarize_levels(tables: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """{level: {mean, std, min, max}} over folds of each fold's mean score."""
    return {
        level: {"mean": float(np.mean(values)), "std": float(np.std(values)), "min": float(np.min(values)), "max": float(np.max(values))}
        for level in tables[0]
        for values in [[table[level]["mean"] for table in tables]]
    }


def cv_metrics(fold_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """One registry entry's metrics from the folds' metrics.json."""
    definition = cv_definition([metrics["selection"]["definition"] for metrics in fold_metrics])
    folds = [metrics["selection"]["score"] for metrics in fold_metrics]
    metrics: dict[str, Any] = {
        "monitor": fold_metrics[0]["monitor"],
        "best_epoch": int(np.median([m["best_epoch"] for m in fold_metrics])),
        "best_epochs": [m["best_epoch"] for m in fold_metrics],
        "epochs_run": int(sum(m["epochs_run"] for m in fold_metrics)),
        "train_seconds": round(float(sum(m["train_seconds"] for m in fold_metrics)), 1),
        "peak_rss_mb": max(m["peak_rss_mb"] for m in fold_metrics),
        "validation": summarize_levels([m["validation"] for m in fold_metrics]),
        "selection": {"definition": definition, "score": float(np.mean(folds)), "std": float(np.std(folds)), "folds": folds},
    }
    if all("test" in m for m in fold_metrics):
        metrics["test"] = {
            "note": "mean over the fold models of their organizer-side scores; reported, never used for selection",
            "competition_file": float(np.mean([m["test"]["competition_file"] for m in fold_metrics])),
            "noise_levels": summarize_levels([m["test"]["noise_levels"] for m in fold_metrics]),
        }
    return metrics


def refit_config(config: Config, epochs: int) -> Config:
    """The config of a refit: every labeled series, `epochs` epochs, no early stopping."""
    return dataclasses.replace(config, cv=dataclasses.replace(config.cv, refit=True), train=dataclasses.replace(config.train, epochs=epochs, early_stopping=False))


def cross_validate(config: Config, experiment: str = "", callbacks_for: Any = None, refit: bool = False, force: bool = False) -> Path:
    """Train (or reuse) every fold and write the cross-validation's registry entry; returns its folder.
    `callbacks_for(fold)`: extra Keras callbacks for a fold's training (the tuner's pruning).
    `refit`: then train on every labeled series for the folds' median best epoch count."""
    import keras

    if config.cv.fold != -1:
        raise ConfigError(f"cv.fold={config.cv.fold}: make cv sets the fold of each run itself; leave cv.fold at -1")
    cv_id = cv_id_for(config)
    folder = config.path("runs", cv_id)
    fold_dirs = []
    for fold in range(config.cv.folds):
        print(f"[fold {fold + 1}/{config.cv.folds}] {cv_id}", flush=True)
        fold_dirs.append(train(fold_config(config, fold), experiment=f"cv:{cv_id}", force=force, callbacks=tuple(callbacks_for(fold)) if callbacks_for else ()))
        keras.backend.clear_session()
    fold_metrics = [json.loads((run_dir / METRICS).read_text()) for run_dir in fold_dirs]
    metrics = cv_metrics(fold_metrics)
    first = json.loads((fold_dirs[0] / LINEAGE).read_text())
    lineage = {
        "run_id": cv_id,
        "kind": "cv",
        "experiment": experiment,
        "competition": config.data.competition,
        "model": model_tag(config),
        "regularizer": regularizer_tag(config),
        "backend": backend_name(),
        "folds": [run_dir.name for run_dir in fold_dirs],
        **{key: first[key] for key in ("classes", "channels", "series_shape", "data_inputs")},
    }
    if refit:
        print(f"[refit] {metrics['best_epoch']} epochs (the folds' median best) on every labeled series", flush=True)
        lineage["refit"] = train(refit_config(config, metrics["best_epoch"]), experiment=f"cv:{cv_id}:refit").name
    contents = {"config.json": config.to_dict(), LINEAGE: lineage, METRICS: metrics}  # metrics.json last: it marks the entry done
    with atomic_files(*(folder / name for name in contents)) as temps:
        for temp, content in zip(temps, contents.values()):
            temp.write_text(json.dumps(content, indent=2, default=str) + "\n")
    selection = metrics["selection"]
    levels = "  ".join(f"{level}: {value['mean']:.3f} ± {value['std']:.3f}" for level, value in metrics["validation"].items())
    print(f"cross-validated {cv_id}: selection score {selection['score']:.4f} ± {selection['std']:.4f} over {len(fold_dirs)} folds "
          f"({selection['definition']['select_on']}, noise {selection['definition']['noise_level']:g}); validation by noise level  {levels}; "
          f"median best epoch {metrics['best_epoch']}" + (f"; refit: {lineage['refit']}" if refit else ""))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.train", __doc__)
    parser.add_argument("--force", action="store_true", help="train again even if this config already has a finished run")
    args = parser.parse_args(argv)
    return run_stage(lambda: train_or_cross_validate(load_config(args.exp, overrides(args)), Path(args.exp).stem if args.exp else "", args.force), keras=True)


def train_or_cross_validate(config: Config, experiment: str, force: bool) -> Path:
    """`make train`: one run, or, for a competition too small to validate on (a validation split or
    held-out fold under cv.min_validation series), a cross-validation: every labeled series is then
    validated on once, and `make predict` averages the fold models."""
    competition = open_competition(config)
    if too_small_to_validate(config, competition):
        held_out = len(competition.validation) if competition.validation is not None else "a fold of"
        print(f"{config.data.competition}: {held_out} validation series are too few to choose a checkpoint on (cv.min_validation={config.cv.min_validation}): "
              f"cross-validating over {config.cv.folds} folds instead (make predict then averages the fold models)", flush=True)
        return cross_validate(config, experiment, force=force)
    return train(config, experiment=experiment, force=force)

if __name__ == "__main__":
    sys.exit(main())
