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
import hashlib
import json
import os
import platform
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cli import run_stage, stage_parser
from pipeline.competition import Competition, load_competition
from pipeline.config import Config, ConfigError, load_config
from pipeline.files import write_json_atomic
from pipeline.runtime import BackendError, backend_devices, backend_name, require_backend, tensorflow_available
from pipeline.signals import add_noise, channel_std

METRICS = "metrics.json"
MODEL = "model.keras"
CHECKPOINT = "checkpoint.keras"
HISTORY = "history.csv"


class TrainingError(ValueError):
    """Training could not produce a usable model (e.g. the loss became NaN)."""


# ---- lineage -------------------------------------------------------------------------------------


def regularizer_tag(config: Config) -> str:
    """A short, readable summary of the active regularizers, e.g. 'gn0.5-l2-do0.3-x4'; 'none' if none."""
    r, a, t = config.regularization, config.augment, config.train
    parts = []
    if r.gaussian_noise:
        parts.append(f"gn{r.gaussian_noise:g}")
    kernel = "l1l2" if r.l1 and r.l2 else "l1" if r.l1 else "l2" if r.l2 else ""
    parts += [kernel] if kernel else []
    parts += ["rl1l2" if r.recurrent_l1 and r.recurrent_l2 else "rl1" if r.recurrent_l1 else "rl2"] if (r.recurrent_l1 or r.recurrent_l2) else []
    parts += ["bl"] if (r.bias_l1 or r.bias_l2) else []
    for value, short in ((r.input_dropout, "ido"), (r.dropout, "do"), (r.recurrent_dropout, "rdo"), (r.max_norm, "mn")):
        if value:
            parts.append(f"{short}{value:g}")
    for value, short in ((a.jitter, "jit"), (a.scaling, "sc"), (a.magnitude_warp, "mw"), (a.time_warp, "tw"), (a.rotation_degrees, "rot"), (a.channel_dropout, "cd")):
        if value:
            parts.append(f"{short}{value:g}")
    if a.permutation_segments > 1:
        parts.append(f"perm{a.permutation_segments}")
    if a.noised_copies:
        parts.append(f"x{a.noised_copies}")
    for value, short in ((t.label_smoothing, "ls"), (t.weight_decay, "wd"), (t.clipnorm, "cn"), (t.clipvalue, "cv")):
        if value:
            parts.append(f"{short}{value:g}")
    if not t.early_stopping:
        parts.append("noes")
    return "-".join(parts) or "none"


def config_hash(config: Config) -> str:
    """Hash of everything that changes the result (not where files go, not how much is printed)."""
    content = config.to_dict()
    content.pop("paths")
    content.pop("compare")
    content.pop("transcribe")
    content["train"].pop("verbose")
    content["train"].pop("steps_per_execution")  # how many steps per compiled call: speed, not the result
    if content["model"]["use_cudnn"]:  # the default keeps the run ids made before the option existed
        content["model"].pop("use_cudnn")
    if backend_name() != "tensorflow":  # the same config on another backend is another run (TensorFlow ids stay as they were)
        content["backend"] = backend_name()
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:8]


def run_id_for(config: Config) -> str:
    return f"{config.data.competition}_{config.model.name}_{regularizer_tag(config)}_{config_hash(config)}"


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


# ---- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    competition: Competition
    classes: tuple[int, ...]  # activity numbers; index i is the model's output i
    train_series: np.ndarray
    train_labels: np.ndarray  # class indices
    validation_series: np.ndarray
    validation_labels: np.ndarray
    noisy_validation_series: np.ndarray  # the validation subjects under the test noise profile
    channel_std: np.ndarray  # of the training series: the unit of every noise level


def to_indices(labels: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    lookup = {activity: index for index, activity in enumerate(classes)}
    return np.array([lookup[int(label)] for label in labels], dtype=np.int64)


def load_training_data(config: Config) -> TrainingData:
    """Train and validation arrays of the configured competition, plus the noisy validation copy."""
    competition = load_competition(config.processed_dir / config.data.competition)
    classes = competition.activities
    train_series, train_labels = competition.train.series, to_indices(competition.train.labels, classes)
    if competition.validation is None:
        # A competition without a validation folder: hold out a seeded fifth of train.
        order = np.random.default_rng(config.train.seed).permutation(len(train_series))
        cut = len(order) // 5
        validation_series, validation_labels = train_series[order[:cut]], train_labels[order[:cut]]
        train_series, train_labels = train_series[order[cut:]], train_labels[order[cut:]]
    else:
        validation_series, validation_labels = competition.validation.series, to_indices(competition.validation.labels, classes)
    std = channel_std(train_series)
    noisy = add_noise(validation_series, config.data.noise_profile, config.data.test_noise, std, config.train.seed + 7)
    if config.train.max_train_series and len(train_series) > config.train.max_train_series:
        keep = np.sort(np.random.default_rng(config.train.seed).choice(len(train_series), config.train.max_train_series, replace=False))
        train_series, train_labels = train_series[keep], train_labels[keep]
    return TrainingData(competition, classes, train_series, train_labels, validation_series, validation_labels, noisy, std)


def host_test_set(config: Config, competition: Competition, classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The organizer's side, when it exists (emulated competitions): clean test series, labels, the
    channel std of the data card, and the labels of the participant's noisy test file. Never used to train or select."""
    private = config.private_dir / config.data.competition
    if not (private / "test_clean.npz").is_file():
        return None
    with np.load(private / "test_clean.npz") as archive:
        clean, ids = archive["series"], archive["id"].astype(str)
    solution = pd.read_csv(private / "solution.csv", dtype={"file": str}).set_index("file")
    labels = to_indices(solution.loc[ids, "activity"].to_numpy(), classes)
    card = json.loads((config.processed_dir / config.data.competition / "datacard.json").read_text())
    std = np.array(list(card["noise"]["channel_std"].values()))
    file_labels = to_indices(solution.loc[competition.test.ids, "activity"].to_numpy(), classes)
    return clean, labels, std, file_labels


def accuracy_at_noise(model: Any, series: np.ndarray, labels: np.ndarray, levels: tuple[float, ...], seeds: int, profile: str, std: np.ndarray, base_seed: int) -> dict[str, dict[str, float]]:
    """Accuracy of `model` under each noise level, over `seeds` noise draws: mean, std, min, max."""
    table = {}
    for level in levels:
        scores = []
        for draw in range(seeds if level > 0 else 1):
            noisy = add_noise(series, profile, level, std, base_seed + 1000 * draw + int(level * 100))
            predicted = model.predict(noisy, batch_size=1024, verbose=0).argmax(-1)
            scores.append(float((predicted == labels).mean()))
        table[f"{level:g}"] = {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "min": float(np.min(scores)), "max": float(np.max(scores))}
    return table


# ---- callbacks -----------------------------------------------------------------------------------


def make_callbacks(run_dir: Path, config: Config, data: TrainingData, monitor: str, previous_best: float | None) -> list[Any]:
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
            predicted = self.model.predict(other_series, batch_size=1024, verbose=0).argmax(-1)
            logs[other_name] = float((predicted == data.validation_labels).mean())

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

    callbacks = [
        BothValidations(),
        StopOnNaN(),
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=True),
        # With early stopping off, the run keeps its last epoch (that is what "no early stopping" means).
        keras.callbacks.ModelCheckpoint(str(run_dir / CHECKPOINT), monitor=monitor, mode="max", save_best_only=train.early_stopping, initial_value_threshold=previous_best if train.early_stopping else None),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="max", factor=0.5, patience=train.reduce_lr_patience, min_lr=1e-5, verbose=0),
        keras.callbacks.CSVLogger(str(run_dir / HISTORY), append=True),
        EpochSummary(),
    ]
    if tensorflow_available():  # Keras' TensorBoard callback writes through tf.summary, on any backend
        callbacks.insert(-1, keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, update_freq="epoch"))
    else:
        print("no TensorBoard logs: Keras writes them through TensorFlow, which is not installed here", flush=True)
    if train.early_stopping:
        callbacks.insert(4, keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=train.patience, restore_best_weights=True))
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


def previous_best(run_dir: Path, monitor: str) -> float | None:
    """Best monitored score of the epochs a killed run already finished (so a resumed run keeps it)."""
    path = run_dir / HISTORY
    if not path.is_file() or path.stat().st_size == 0:
        return None
    history = pd.read_csv(path)
    return float(history[monitor].max()) if monitor in history and len(history) else None


# ---- the stage -------------------------------------------------------------------------------------


def train(config: Config, experiment: str = "", force: bool = False) -> Path:
    """Train the configured model; returns the run folder (an existing finished run is reused)."""
    run_id = run_id_for(config)
    run_dir = config.path("runs", run_id)
    if (run_dir / METRICS).is_file() and not force:
        print(f"{run_dir}: already trained with this config (use FORCE=1 to train again)")
        return run_dir
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    resuming = (run_dir / "backup").exists()
    setup_devices(config)
    import keras

    from pipeline import augment, models

    data = load_training_data(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", config.to_dict())
    train_series, train_labels = augment.noised_copies(
        data.train_series, data.train_labels, config.augment.noised_copies, config.augment.noised_copies_level, config.data.noise_profile, data.channel_std, config.train.seed
    )
    monitor = "val_noisy_accuracy" if config.train.select_on == "noisy" else "val_clean_accuracy"
    selection_series = data.noisy_validation_series if config.train.select_on == "noisy" else data.validation_series
    num_classes = len(data.classes)
    flat = data.train_series.reshape(-1, data.train_series.shape[-1])
    scope, replicas = distribution_scope(config)
    with scope():
        model = models.build_model(config, data.train_series.shape[1:], num_classes, flat.mean(0), flat.var(0))
        compile_model(model, config)
    card_path = config.processed_dir / config.data.competition / "datacard.json"
    lineage = {
        "run_id": run_id,
        "experiment": experiment,
        "competition": config.data.competition,
        "model": config.model.name,
        "regularizer": regularizer_tag(config),
        "classes": list(data.classes),
        "channels": list(data.competition.channels),
        "series_shape": list(data.train_series.shape[1:]),
        "channel_std": data.channel_std.tolist(),
        "data_inputs": json.loads(card_path.read_text()).get("inputs") if card_path.is_file() else None,
        "train_series": int(len(train_series)),
        "parameters": int(model.count_params()),
        "backend": backend_name(),
    }
    write_json_atomic(run_dir / "run.json", lineage)
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
            batch_size=config.train.batch_size,
            shuffle=True,
            callbacks=make_callbacks(run_dir, config, data, monitor, previous_best(run_dir, monitor)),
            verbose=verbose,
        )
    seconds = time.perf_counter() - started
    if model.nan_at is not None:
        shutil.rmtree(run_dir / "backup", ignore_errors=True)  # a rerun must not resume from NaN weights
        raise TrainingError(f"{run_dir}: the loss became NaN or infinite; lower train.learning_rate or set train.clipnorm (e.g. 1.0)")
    return finish_run(run_dir, config, data, monitor, seconds)


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
        "validation": accuracy_at_noise(best, data.validation_series, data.validation_labels, train.noise_levels, train.noise_seeds, profile, data.channel_std, train.seed),
    }
    host = host_test_set(config, data.competition, data.classes)
    if host is not None:
        clean, labels, std, file_labels = host
        predicted = best.predict(data.competition.test.series, batch_size=1024, verbose=0).argmax(-1)
        metrics["test"] = {
            "note": "organizer-side scores from data/private; never used for training or selection",
            "competition_file": float((predicted == file_labels).mean()),
            "noise_levels": accuracy_at_noise(best, clean, labels, train.noise_levels, train.noise_seeds, profile, std, train.seed + 99),
        }
    temp = run_dir / f".{MODEL}.tmp.keras"
    best.save(temp)
    temp.replace(run_dir / MODEL)
    write_json_atomic(run_dir / METRICS, metrics)
    summary = "  ".join(f"{level}: {value['mean']:.3f}" for level, value in metrics["validation"].items())
    print(f"done {run_dir.name} in {seconds:.0f}s, best epoch {metrics['best_epoch']}; validation accuracy by noise level  {summary}")
    if host is not None:
        test = "  ".join(f"{level}: {value['mean']:.3f}" for level, value in metrics["test"]["noise_levels"].items())
        print(f"host-side test accuracy by noise level  {test}; on the competition's test file {metrics['test']['competition_file']:.3f}")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.train", __doc__)
    parser.add_argument("--force", action="store_true", help="train again even if this config already has a finished run")
    args = parser.parse_args(argv)
    return run_stage(lambda: train(load_config(args.exp, args.set), experiment=Path(args.exp).stem if args.exp else "", force=args.force), keras=True)

if __name__ == "__main__":
    sys.exit(main())
