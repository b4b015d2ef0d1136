"""One frozen configuration for every stage.

A Config is built from the defaults below, then an experiment TOML file, then
`section.key=value` overrides (from make variables or `--set`). Unknown keys and
values of the wrong type are errors, so a typo never silently trains the wrong
model. Every default carries the reason it was chosen.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

Settings = typing.TypeVar("Settings")

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# What a run id is made of (pipeline.runs.registry.config_hash): every field and section is part of the
# result unless it is declared otherwise here, in its metadata: where files go, how much is printed,
# how a step is batched into calls, and the settings of the studies and tools that only read runs.
NOT_RESULT = {"result": False}

# UCI HAR's own test subjects: keeping them makes our numbers comparable to the literature.
UCI_TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)


@dataclass(frozen=True)
class PathsConfig:
    # Empty means the project root (the folder that holds pipeline/); tests point it at a temp folder.
    root: str = ""
    data: str = "data"  # raw/, processed/ and private/ live below it
    runs: str = "runs"  # one folder per run (make runs lists them), CVs, tuning studies, the MLflow store
    submissions: str = "submissions"  # make predict's CSVs and the local leaderboard
    reports: str = "reports"  # make evaluate's reports and figures, the peers' and studies' tables
    exports: str = "exports"  # make export: LiteRT files for phones


@dataclass(frozen=True)
class DataConfig:
    # Where `make data` reads from: embedded | local:<path> | kaggle-dataset:<owner/slug> | kaggle-competition:<slug>
    source: str = "embedded"
    # The competition every later stage works on (a folder under data/processed/).
    competition: str = "classroom"
    # Name for a local or Kaggle source's competition; empty means the folder or slug name.
    name: str = ""
    # 6 = UCI HAR's activities; 12 adds HAPT's six postural transitions.
    classes: int = 6
    sample_rate_hz: float = 50.0  # the phone's sampling rate in HAPT
    median_kernel: int = 3  # UCI HAR: a median filter removes isolated spikes first
    lowpass_hz: float = 20.0  # UCI HAR: 3rd-order Butterworth at 20 Hz removes sensor noise
    lowpass_order: int = 3  # UCI HAR's filter order (its 3rd-order Butterworth)
    gravity_hz: float = 0.3  # UCI HAR: gravity is the part of acceleration below 0.3 Hz
    window: int = 128  # UCI HAR: 2.56 s windows at 50 Hz
    overlap: float = 0.5  # UCI HAR: 50% overlap between windows
    series_length: int = 5  # the classroom competition: 5 consecutive windows per series
    series_stride: int = 1  # consecutive series share 4 of 5 windows, as rows of a sliding view
    test_subjects: tuple[int, ...] = UCI_TEST_SUBJECTS  # UCI HAR's nine: comparable with the literature
    # Four whole training subjects (about a fifth of training) score early stopping and checkpoints.
    validation_subjects: tuple[int, ...] = (3, 11, 21, 27)
    # Named, seeded noise: see pipeline.data.signals.NOISE_PROFILES.
    noise_profile: str = "gaussian"
    train_noise: float = 0.05  # the competition's clean-ish train and validation series
    test_noise: float = 0.5  # and its very noisy test series (x clean-train std per feature)
    public_fraction: float = 0.3  # Kaggle's usual public/private leaderboard split of the test rows
    seed: int = 2017  # the year of the original competition; any fixed value makes data reproducible

    def __post_init__(self) -> None:
        """Range checks that a type alone cannot express (each section checks its own fields)."""
        if self.classes not in (6, 12):
            raise ConfigError(f"data.classes must be 6 or 12, got {self.classes}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"data.overlap must be in [0, 1), got {self.overlap}")
        if self.window < 8 or self.series_length < 1 or self.series_stride < 1:
            raise ConfigError("data.window must be >= 8, series_length and series_stride >= 1")
        if not 0 < self.gravity_hz < self.lowpass_hz < self.sample_rate_hz / 2:
            raise ConfigError("need 0 < data.gravity_hz < data.lowpass_hz < half the sample rate")
        if set(self.test_subjects) & set(self.validation_subjects):
            raise ConfigError("a subject cannot be in both data.test_subjects and data.validation_subjects")
        if self.train_noise < 0 or self.test_noise < 0:
            raise ConfigError("noise levels cannot be negative")
        if not 0 < self.public_fraction < 1:
            raise ConfigError(f"data.public_fraction must be in (0, 1), got {self.public_fraction}")


# The data settings a model's inputs depend on (the UCI HAR chain and the windowing): runs averaged
# over one recording must agree on them, and an exported model's contract lists them.
PREPROCESSING = (
    "sample_rate_hz",
    "median_kernel",
    "lowpass_hz",
    "lowpass_order",
    "gravity_hz",
    "window",
    "overlap",
    "series_length",
)


@dataclass(frozen=True)
class ModelConfig:
    # A name from pipeline.models.MODELS (`python -m pipeline.models` lists them).
    name: str = "bilstm"
    units: int = 64  # hidden units per direction: enough for 9 channels, small enough for a 2-core CPU
    layers: int = 2  # stacked recurrent layers; two is the usual sweet spot for HAR
    cell: str = "lstm"  # lstm | gru | rnn: the recurrent cell (the forward one in bidirectional layers)
    bidirectional: bool = True  # read each series both ways (stacked, deep_*, attention, cnn_lstm, seq2seq encoder)
    # one flag per stacked layer (e.g. [true, false]); empty = `bidirectional` for all
    bidirectional_layers: tuple[bool, ...] = ()
    # LSTM/GRU layers take the backend's fused cuDNN kernel where eligible (on a GPU); false forces
    # Keras' step-by-step loop (to compare them, or where the fused kernel is slower)
    use_cudnn: bool = True
    # how bidirectional halves combine: concat | sum | ave | mul (the last three need equal sizes)
    merge_mode: str = "concat"
    residual: bool = False  # shortcut connections between stacked recurrent layers
    # deep input-to-hidden: Dense sizes applied at every time step before the recurrence
    input_mlp: tuple[int, ...] = ()
    output_mlp: tuple[int, ...] = ()  # deep hidden-to-output: Dense sizes between the recurrence and the softmax
    # How bilstm, stacked, deep_input/output and cnn_lstm read their last recurrent layer: "last" (its
    # final state), or a pooling of its output at every step: "average", "max", "average-max" (both).
    pooling: str = "last"
    # A statistics branch beside the recurrent summary (Ignatov 2018: window statistics beside learned
    # features): per channel mean, std, min and max of the model's (normalized, noisy) input window,
    # plus the gravity direction (the mean total acceleration as cosines to the three axes) where the
    # channels name it, concatenated with the recurrent summary before the classifier. The mean is what
    # survives the test noise (its noise is 0.5 / sqrt(T) of a channel's std), and the gravity direction
    # is what separates sitting from standing.
    window_stats: bool = False
    # A multi-scale convolutional front end before the recurrent layers (Inception-style, as
    # TCN-Inception): parallel 1-D convolutions of these kernel lengths over the window, each
    # front_end_filters wide, concatenated, batch-normalized, ReLU; () = off. With front_end_residual the
    # window (projected) is added back, so the recurrence still sees the raw signal.
    front_end: tuple[int, ...] = ()
    front_end_filters: int = 32
    front_end_residual: bool = False
    # Average the window over blocks of this many steps before the recurrence (1 = off): the recurrence
    # reads T / downsample steps (that much faster), and white test noise is averaged down by
    # sqrt(downsample), which is what a still window's small movements need to survive it. The
    # statistics branch still reads the full window.
    downsample: int = 1
    # The most steps the recurrence reads (0 = no limit): with downsample left at 1, a longer series is
    # block-averaged by ceil(T / max_steps) first, so a user's long series (hundreds or thousands of
    # steps) reach the recurrent layers at a length they learn from. The HAPT competitions (5 and 128
    # steps) are at or under it and unchanged.
    max_steps: int = 128
    # Wide and deep: a linear path to the logits, added to the recurrent path's: from the flattened
    # window ("input", where logistic regression is strong: the short classroom series) or from the
    # window statistics ("stats"); "" = off.
    wide: str = ""
    # Each architecture's own settings, as given: the TOML sub-table [model.<name>] (SET=
    # "model.<name>.<key>=..."). The architecture's settings class reads and checks them
    # (pipeline/models/, one per architecture; `python -m pipeline.models` lists them).
    settings: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"subtables": True})

    def own(self, name: str, settings_class: type[Settings]) -> Settings:
        """Architecture `name`'s own settings: its [model.<name>] table read into `settings_class`
        (its defaults where the table leaves a key out), each key checked."""
        return build_settings(settings_class, self.settings.get(name, {}), f"model.{name}.")

    def with_own(self, name: str, **changes: Any) -> ModelConfig:
        """This model config with keys of architecture `name`'s table set."""
        return dataclasses.replace(self, settings={**self.settings, name: {**self.settings.get(name, {}), **changes}})

    def __post_init__(self) -> None:
        if self.units < 1 or self.layers < 1:
            raise ConfigError("model.units and model.layers must be >= 1")
        if self.cell not in ("lstm", "gru", "rnn"):
            raise ConfigError(f"model.cell must be lstm, gru or rnn, got {self.cell!r}")
        if self.pooling not in ("last", "average", "max", "average-max"):
            raise ConfigError(f"model.pooling must be last, average, max or average-max, got {self.pooling!r}")
        if (
            self.wide not in ("", "input", "stats")
            or any(kernel < 1 for kernel in self.front_end)
            or self.front_end_filters < 1
            or self.downsample < 1
            or self.max_steps < 0
        ):
            raise ConfigError(
                "model.wide must be '', input or stats; model.front_end kernels, front_end_filters and downsample >= 1; max_steps >= 0"
            )
        if (self.window_stats or self.wide or self.front_end or self.downsample > 1) and self.name == "seq2seq":
            raise ConfigError(
                "model.window_stats, model.wide, model.front_end and model.downsample belong to classifiers; "
                "seq2seq decodes a token instead (use another model)"
            )
        if self.merge_mode not in ("concat", "sum", "ave", "mul"):
            raise ConfigError(f"model.merge_mode must be concat, sum, ave or mul, got {self.merge_mode!r}")


@dataclass(frozen=True)
class RegularizationConfig:
    # Weight penalties (0 = off). L1 and L2 together give L1L2. `l1`/`l2` act on every input kernel
    # (recurrent layers and Dense layers), `recurrent_*` on recurrent kernels, `bias_*` on biases.
    l1: float = 0.0
    l2: float = 0.0
    recurrent_l1: float = 0.0
    recurrent_l2: float = 0.0
    bias_l1: float = 0.0
    bias_l2: float = 0.0
    input_dropout: float = 0.0  # dropout on the normalized input features
    dropout: float = 0.0  # dropout between layers and before the classifier
    recurrent_dropout: float = 0.0  # dropout on h(t-1); note: loses the fused cuDNN kernel on GPU
    gaussian_noise: float = 0.0  # std of a GaussianNoise input layer, in units of each feature's std (train only)
    max_norm: float = 0.0  # max-norm constraint on every kernel and recurrent kernel (0 = off)
    # Noise-consistency training (AugMix's Jensen-Shannon consistency, Hendrycks et al. 2020, with
    # Gaussian noise as the corruption, as Rusak et al. 2020 train for it): each training batch is seen
    # clean and noised at a level drawn per series from `consistency_noise` (x each feature's std), the
    # classification loss on both views plus this weight x the Jensen-Shannon divergence between their
    # predictions; 0 = off. At inference the model is the plain model: it exports like any other.
    consistency: float = 0.0
    consistency_noise: tuple[float, float] = (0.0, 1.2)

    def __post_init__(self) -> None:
        for name in ("input_dropout", "dropout", "recurrent_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"regularization.{name} must be in [0, 1)")
        for name in (
            "l1", "l2", "recurrent_l1", "recurrent_l2", "bias_l1", "bias_l2", "gaussian_noise", "max_norm", "consistency",
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ConfigError(f"regularization.{name} cannot be negative")
        if len(self.consistency_noise) != 2 or not 0 <= self.consistency_noise[0] <= self.consistency_noise[1]:
            raise ConfigError("regularization.consistency_noise must be [low, high] with 0 <= low <= high")


@dataclass(frozen=True)
class AugmentConfig:
    # Training-only augmentation layers (pipeline/models/augment.py); 0 = off. Strengths are in units of
    # each channel's training std, except rotation (degrees) and permutation (segments).
    jitter: float = 0.0  # additive Gaussian noise
    scaling: float = 0.0  # per-series, per-channel gain ~ N(1, scaling)
    magnitude_warp: float = 0.0  # smooth random gain curve over time
    time_warp: float = 0.0  # smooth random speed changes; the length is kept
    warp_knots: int = 4  # control points of the warp curves
    rotation_degrees: float = 0.0  # random 3-D rotation of every x, y, z triplet, up to this angle
    permutation_segments: int = 0  # shuffle this many equal segments of each series (0 or 1 = off)
    channel_dropout: float = 0.0  # probability of zeroing a whole channel of a series
    # The course's advice: add k noised copies of the training set (fixed noise, data.noise_profile).
    noised_copies: int = 0
    noised_copies_level: float = 0.5  # their noise level, x the clean-train std

    def __post_init__(self) -> None:
        for name in (
            "jitter",
            "scaling",
            "magnitude_warp",
            "time_warp",
            "rotation_degrees",
            "channel_dropout",
            "noised_copies",
            "noised_copies_level",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment.{name} cannot be negative")
        if self.channel_dropout >= 1:
            raise ConfigError("augment.channel_dropout must be below 1")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60  # an upper bound: early stopping usually ends a run well before
    batch_size: int = 64  # small batches regularize; 64 keeps a 2-core CPU busy
    learning_rate: float = 0.002  # Adam; reduced on plateaus
    optimizer: str = "adam"  # adam | adamw (decoupled weight decay) | sgd
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (optimizer = adamw)
    label_smoothing: float = 0.0  # soft targets: 0.1 spreads 10% of the mass over the other classes
    clipnorm: float = 0.0  # clip each gradient's norm (BPTT's exploding gradients); 0 = off
    clipvalue: float = 0.0  # clip each gradient element; 0 = off
    early_stopping: bool = True  # stop after `patience` epochs without a better selection score, keep the best
    patience: int = 10  # epochs without improvement before stopping
    reduce_lr_patience: int = 4  # epochs without improvement before halving the learning rate
    # plateau: halve the rate after reduce_lr_patience epochs without improvement; cosine: a linear
    # warmup over warmup_epochs, then a cosine decay to 1% of learning_rate at train.epochs
    schedule: str = "plateau"
    warmup_epochs: int = 3
    # Polyak averaging: the momentum of the optimizer's moving average of the weights (Keras use_ema);
    # validation, checkpoints and the saved model use the average. 0 = off
    ema: float = 0.0
    # Model selection: "noisy" scores the validation subjects under the test noise profile (the
    # competition's real difficulty); "clean" uses them as given.
    select_on: str = "noisy"
    noise_levels: tuple[float, ...] = (
        0.0,
        0.25,
        0.5,
        1.0,
    )  # validation (and host-side test) accuracy is reported at each
    noise_seeds: int = 3  # noise draws per level; the spread is reported
    max_train_series: int = 0  # cap on training series (0 = all): for quick trials and tests
    seed: int = 42  # weights, shuffling and augmentation draws; a CV repeat or tuning trial offsets it
    deterministic: bool = False  # bit-identical reruns (slower: deterministic kernels)
    mixed_precision: bool = False  # mixed_float16 compute; worth it on a GPU
    xla: bool = False  # jit_compile (cuDNN layers turn it off for the model anyway)
    # Training steps per call of the compiled step (Keras' steps_per_execution): fewer trips through
    # Python per batch, for small batches on a GPU. Speed only: not part of the run id.
    steps_per_execution: int = field(default=1, metadata=NOT_RESULT)
    # none | mirrored (TensorFlow's MirroredStrategy) | data_parallel (keras.distribution.DataParallel, JAX):
    # data parallelism over every visible device, the batch size staying global
    distribute: str = "none"
    # split the CPU into this many logical devices (to test multi-device training on CPU); 0 = leave
    cpu_devices: int = 0
    # Keras' own output besides the project's line per epoch: 0 off, 1 bar, 2 line; -1 = off, with a
    # bar over each epoch's batches on a terminal that the epoch's line replaces (one line per epoch)
    verbose: int = field(default=-1, metadata=NOT_RESULT)

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"train.optimizer must be adam, adamw or sgd, got {self.optimizer!r}")
        if self.select_on not in ("noisy", "clean"):
            raise ConfigError(f"train.select_on must be noisy or clean, got {self.select_on!r}")
        if self.distribute not in ("none", "mirrored", "data_parallel"):
            raise ConfigError(
                f"train.distribute must be none, mirrored (TensorFlow) or data_parallel (JAX), got {self.distribute!r}"
            )
        if self.schedule not in ("plateau", "cosine") or self.warmup_epochs < 0 or not 0 <= self.ema < 1:
            raise ConfigError(
                f"train.schedule must be plateau or cosine (got {self.schedule!r}), train.warmup_epochs >= 0, train.ema in [0, 1)"
            )
        if self.steps_per_execution < 1:
            raise ConfigError(f"train.steps_per_execution must be >= 1, got {self.steps_per_execution}")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0 or not 0 <= self.label_smoothing < 1:
            raise ConfigError(
                "train.epochs and train.batch_size must be >= 1, learning_rate > 0, label_smoothing in [0, 1)"
            )


@dataclass(frozen=True)
class CvConfig:
    # `make cv`: k-fold cross-validation over every labeled training series (train + validation),
    # whole subjects per fold (GroupKFold) where the competition names them, else contiguous blocks.
    folds: int = 5  # five folds of the 25 UCI HAR training subjects: five subjects score each fold
    fold: int = -1  # -1 = select on the competition's validation split; 0..folds-1 = this fold is the validation set (set by make cv)
    # Without subject ids: series dropped after each block boundary, so that series sharing windows
    # (neighbours in id order; classroom series share 4 of their 5 windows) never sit on both sides
    gap: int = 4
    # A refit (make cv REFIT=1 sets it): train on every labeled series for a fixed epoch count chosen
    # by the CV; nothing is held out, so the run has no validation score and is never "the best run"
    refit: bool = False
    # A competition whose validation split (or held-out fold) has fewer series than this cannot
    # choose a checkpoint: `make train` cross-validates it instead, and `make predict` averages the folds
    min_validation: int = field(default=50, metadata=NOT_RESULT)
    # Repeated k-fold: the subjects are reshuffled into new folds for every repeat after the first
    # (repeat 0 is the plain GroupKFold above, so earlier CV runs are reused); without subjects the
    # block boundaries move by part of a block instead (pipeline.data.datasets.fold_assignment). Two configurations
    # compared on the same repeats and folds are compared by their per-fold differences (make
    # cv-compare, the corrected resampled t-test); more repeats narrow its interval.
    repeats: int = field(default=1, metadata=NOT_RESULT)  # a fold run is named by its cv.repeat
    repeat: int = 0  # which repeat a fold run belongs to (set by make cv, like `fold`)
    # Nested selection: a fold run chooses its checkpoint, early-stopping epoch and learning-rate
    # plateaus on one of `inner_folds` inner folds of its own training part (whole subjects, or a
    # block with cv.gap neighbours purged), and its held-out fold is scored once, by the model it
    # chose. 5 keeps a fifth of the training part out to choose on, as `make train` keeps the
    # 4-of-21-subject validation split. 0 is the protocol before 2026-12-05 (each fold chose on the
    # very series it is scored on: about 1.7 points of optimism on raw windows); it is kept only to
    # measure that optimism, and make cv-compare never pairs it with a nested CV.
    inner_folds: int = 5
    # A competition too small to validate on: `make train` blends its cross-validation with these
    # peers (make blend: a noise-aware gate fitted out of fold), and `make predict` then takes
    # whichever of the two cross-validates better. On BasicMotions the blend was ahead of the CV
    # alone by +0.37 [+0.04, +0.70], paired (docs/choosing.md). () = the cross-validation alone.
    small_blend: tuple[str, ...] = field(default=("minirocket+copies",), metadata=NOT_RESULT)

    def __post_init__(self) -> None:
        if self.folds < 2 or not -1 <= self.fold < self.folds or self.gap < 0:
            raise ConfigError(f"cv.folds must be >= 2, cv.fold in -1..{self.folds - 1}, cv.gap >= 0")
        if self.inner_folds == 1 or self.inner_folds < 0:
            raise ConfigError(
                f"cv.inner_folds={self.inner_folds}: give 2 or more (nested selection) or 0 (the old, optimistic protocol)"
            )
        if self.repeats < 1 or not 0 <= self.repeat < self.repeats:
            raise ConfigError(f"cv.repeats must be >= 1 and cv.repeat in 0..{self.repeats - 1}")


@dataclass(frozen=True)
class TuneConfig:
    # `make tune` (pipeline/studies/tune.py): an Optuna study; every trial is a cross-validation (cv.folds)
    # scored at the competition's noise on its held-out folds (each fold run choosing on an inner fold of its
    # training part), so the tuner chooses on training subjects only; its best score is the maximum of its trials' readings.
    trials: int = 20  # trials of the study, all workers together
    # The search space, one entry per config key: "key=low..high" (an int or float range, as the
    # key's type), "key=log:low..high" (log scale), or "key=a|b|c" (choices).
    space: tuple[str, ...] = (
        "regularization.gaussian_noise=0.2..1.0",
        "regularization.dropout=0.0..0.4",
        "regularization.l2=log:1e-6..1e-3",
        "model.units=16|32|64",
        "train.learning_rate=log:5e-4..5e-3",
    )
    study: str = ""  # empty = <competition>_<experiment name>
    # empty = an SQLite file runs/tune/<study>.db; any SQLAlchemy URL shares one study across machines
    storage: str = ""
    seed: int = 0  # the TPE sampler's seed: trial n draws with seed + n, whichever worker runs it
    startup_trials: int = 3  # finished trials before the median pruner stops any trial
    warmup_epochs: int = 3  # epochs of each fold before the pruner judges it
    # A running trial's worker writes a heartbeat every heartbeat_seconds; a trial silent for
    # grace_seconds (its worker was killed, its machine went away) is marked failed and queued again,
    # up to `retries` times, for a live worker, which resumes its fold runs where runs/ is shared.
    heartbeat_seconds: int = 10
    grace_seconds: int = 60
    retries: int = 3

    def __post_init__(self) -> None:
        if self.trials < 1 or self.startup_trials < 0 or self.warmup_epochs < 0:
            raise ConfigError("tune.trials must be >= 1, tune.startup_trials and tune.warmup_epochs >= 0")
        if self.heartbeat_seconds < 1 or self.grace_seconds <= self.heartbeat_seconds or self.retries < 0:
            raise ConfigError(
                "tune.heartbeat_seconds must be >= 1, tune.grace_seconds > tune.heartbeat_seconds, tune.retries >= 0"
            )


@dataclass(frozen=True)
class CompareConfig:
    # `make compare`: every cell of pipeline.studies.compare.GRID for every model, several seeds; each cell
    # is an ordinary run. The budget comes from [train] (experiments/compare.toml keeps it small).
    models: tuple[str, ...] = ("bilstm", "stacked")
    cells: tuple[str, ...] = ()  # empty = the whole grid
    seeds: int = 2  # seeds per cell: the spread across seeds is shown


TRANSCRIBE_TASKS = ("recorded", "shuffled")


@dataclass(frozen=True)
class TranscribeConfig:
    # `make transcribe` (pipeline/studies/transcribe.py): continuous HAPT recordings -> the ordered list of activities.
    lengths_seconds: tuple[float, ...] = (30.0, 60.0, 120.0, 180.0)  # segment lengths: short to long inputs
    stride_seconds: float = 15.0  # segments of one length start this far apart (they overlap)
    frame_seconds: float = 2.0  # one input step: mean and std of the 9 channels over 2 s
    min_activity_seconds: float = 1.0  # labeled stretches shorter than this (cut by a segment edge) are not counted
    epochs: int = 30  # with early stopping (most runs stop after 13 to 28 epochs)
    batch_size: int = 32  # segments per gradient step of the transcription model
    patience: int = 5  # early stopping on validation loss
    learning_rate: float = 0.002  # Adam's, as for the classifiers
    beam_width: int = 4  # beam search keeps this many hypotheses at each step (1 would be greedy decoding)
    # beam search (one segment at a time, slow) scores this many test segments per length, first seed only
    beam_segments: int = 20
    max_train_segments: int = 0  # cap for quick trials and tests (0 = all)
    # Seeds to train every variant with (empty: train.seed alone); conclusions are drawn across them.
    seeds: tuple[int, ...] = ()
    # recorded: segments cut from the recordings (HAPT's protocol fixes the order of activities);
    # shuffled: bouts of randomly ordered activities stitched together, an order that cannot be memorized.
    tasks: tuple[str, ...] = ("recorded", "shuffled")
    shuffled_lengths_seconds: tuple[float, ...] = (60.0, 120.0, 240.0, 360.0)
    shuffled_min_bout_seconds: float = 8.0  # each stitched bout lasts between these two
    shuffled_max_bout_seconds: float = 30.0  # the longest stitched bout
    shuffled_segments_per_subject: int = 24  # stitched segments per subject and length

    def __post_init__(self) -> None:
        if not self.tasks or set(self.tasks) - set(TRANSCRIBE_TASKS) or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(
                f"transcribe.tasks must name some of {', '.join(TRANSCRIBE_TASKS)}; transcribe.seeds must not repeat"
            )
        if (
            not 0 < self.shuffled_min_bout_seconds <= self.shuffled_max_bout_seconds
            or self.shuffled_segments_per_subject < 1
        ):
            raise ConfigError(
                "need 0 < transcribe.shuffled_min_bout_seconds <= shuffled_max_bout_seconds and shuffled_segments_per_subject >= 1"
            )


@dataclass(frozen=True)
class PeersConfig:
    # `make peers` (pipeline/studies/peers.py): what a user would run instead, on the same splits and noise
    models: tuple[str, ...] = ("logistic_regression", "random_forest", "minirocket", "multirocket_hydra", "quant")
    noised_copies: int = 1  # each peer is also fitted with this many noised copies of the training set

    def __post_init__(self) -> None:
        if self.noised_copies < 0:
            raise ConfigError("peers.noised_copies cannot be negative")


@dataclass(frozen=True)
class RecordingConfig:
    # `make recording FILE=...` (pipeline/phone/recording.py). A plain CSV is read with these (Sensor Logger
    # and phyphox exports name their columns and units themselves).
    columns: tuple[str, ...] = ()  # COLUMNS=: time, acc x, y, z, gyro x, y, z column names
    units: str = ""  # UNITS=: the acceleration's unit, g or m/s2 (with gravity)
    gyro_units: str = "rad/s"  # GYRO=: rad/s or deg/s
    time_unit: str = "s"  # s, ms, us or ns
    # The timeline: probabilities averaged over this many neighbouring windows (1 = off; 5 windows
    # span 7.7 s, shorter than any activity bout worth reporting)
    smooth_windows: int = 5

    def __post_init__(self) -> None:
        if self.smooth_windows < 1:
            raise ConfigError("recording.smooth_windows must be >= 1 (1 = no smoothing)")


@dataclass(frozen=True)
class ExportConfig:
    # `make export` (pipeline/phone/export.py): LiteRT files for phones
    parity_windows: int = 0  # test windows on which the LiteRT interpreter must match Keras (0 = all of the test file)
    tolerance: float = 1e-4  # largest allowed probability difference (float32 file)
    quantization: str = "dynamic"  # the smaller variant: dynamic (int8 weights) or float16

    def __post_init__(self) -> None:
        if self.quantization not in ("dynamic", "float16") or self.parity_windows < 0 or self.tolerance <= 0:
            raise ConfigError(
                "export.quantization must be dynamic or float16, export.parity_windows >= 0, export.tolerance > 0"
            )


@dataclass(frozen=True)
class TrackingConfig:
    # Every run, CV, trial and study mirrored into MLflow (pipeline/runs/tracking.py). The project's
    # registry (runs/) stays the source of truth; a tracking failure warns once and never stops a run.
    uri: str = ""  # empty = the embedded store sqlite:///<root>/runs/mlflow.db; "off"; or a server (http://host:5000)

    def __post_init__(self) -> None:
        if self.uri not in ("", "off") and "://" not in self.uri:
            raise ConfigError(
                f"tracking.uri={self.uri!r}: expected empty (the project's store), off, or a URI such as http://host:5000"
            )


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig, metadata=NOT_RESULT)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cv: CvConfig = field(default_factory=CvConfig)
    tune: TuneConfig = field(default_factory=TuneConfig, metadata=NOT_RESULT)
    compare: CompareConfig = field(default_factory=CompareConfig, metadata=NOT_RESULT)
    transcribe: TranscribeConfig = field(default_factory=TranscribeConfig, metadata=NOT_RESULT)
    peers: PeersConfig = field(default_factory=PeersConfig, metadata=NOT_RESULT)
    recording: RecordingConfig = field(default_factory=RecordingConfig, metadata=NOT_RESULT)
    export: ExportConfig = field(default_factory=ExportConfig, metadata=NOT_RESULT)
    tracking: TrackingConfig = field(default_factory=TrackingConfig, metadata=NOT_RESULT)

    # ---- paths, anchored at the project root -------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.paths.root).resolve() if self.paths.root else PROJECT_ROOT

    def path(self, kind: str, *parts: str) -> Path:
        """`config.path("data", "raw")` -> <root>/data/raw, for any field of PathsConfig."""
        if kind == "root" or kind not in {f.name for f in dataclasses.fields(PathsConfig)}:
            raise ConfigError(f"unknown path kind {kind!r}")
        return self.root / getattr(self.paths, kind) / Path(*parts)

    @property
    def raw_dir(self) -> Path:
        return self.path("data", "raw")

    @property
    def processed_dir(self) -> Path:
        return self.path("data", "processed")

    @property
    def private_dir(self) -> Path:
        """Host-side files a participant never sees: answer keys and clean test series."""
        return self.path("data", "private")

    def to_dict(self) -> dict[str, Any]:
        """The config as nested dicts, the architectures' own settings as their [model.<name>] tables."""
        content = dataclasses.asdict(self)
        content["model"].update(content["model"].pop("settings"))
        return content

    def result_dict(self) -> dict[str, Any]:
        """The settings that change what a run learns and how it is scored: every field and section
        but those declared NOT_RESULT. A new field is part of the result, and so of the run id."""
        return result_fields(self)

    def section_hash(self, section: str, leave_out: tuple[str, ...] = ()) -> str:
        """A short stable hash of one section (less the fields `leave_out`), used to tell whether an artifact is up to date."""
        content = {
            key: value for key, value in dataclasses.asdict(getattr(self, section)).items() if key not in leave_out
        }
        from pipeline.files import short_hash  # files imports pandas: only when a hash is asked for

        return short_hash(content, 16)


# Keys that moved into an architecture's own settings (2026-12-05): a config naming the old key is
# refused in one line naming the new one; a run's saved config.json is read with them moved.
MOVED = {
    "model.backward_cell": "model.bilstm.backward_cell",
    "model.backward_units": "model.bilstm.backward_units",
    "model.transition_layers": "model.deep_transition.layers",
    "model.transition_shortcut": "model.deep_transition.shortcut",
    "model.attention_units": "model.attention.units",
    "model.conv_filters": "model.cnn_lstm.filters",
    "model.conv_kernel": "model.cnn_lstm.kernel",
    "model.conv_layers": "model.cnn_lstm.layers",
    "model.decoder_units": "model.seq2seq.decoder_units",
    "model.embedding_dim": "model.seq2seq.embedding_dim",
    "model.seq2seq_attention": "model.seq2seq.attention",
}


def moved_keys_placed(tree: dict[str, Any]) -> dict[str, Any]:
    """A saved config (config.json of a run made before the keys moved) with them in their new places;
    model.attention_units sized the seq2seq decoder's attention too, so it goes to both."""
    if "model" not in tree:
        return tree
    model = {key: dict(value) if isinstance(value, dict) else value for key, value in tree["model"].items()}
    moves = [*MOVED.items(), ("model.attention_units", "model.seq2seq.attention_units")]
    for old, new in moves:
        key = old.split(".")[1]
        if key in model:
            _section, table, name = new.split(".")
            model.setdefault(table, {})[name] = model[key]
    for old in MOVED:
        model.pop(old.split(".")[1], None)
    return {**tree, "model": model}


def result_fields(section: Any) -> dict[str, Any]:
    content = {}
    for item in dataclasses.fields(section):
        if item.metadata.get("result", True):
            value = getattr(section, item.name)
            content[item.name] = result_fields(value) if dataclasses.is_dataclass(value) else value
    return content


# ---- building a Config ----------------------------------------------------------------


def _check_type(value: Any, expected: Any, key: str) -> Any:
    """Return `value` converted to `expected` where that is lossless, else raise ConfigError."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(expected):
            if option is type(None) and value is None:
                return None
        for option in typing.get_args(expected):
            if option is type(None):
                continue
            try:
                return _check_type(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key {key}: {value!r} is not {expected}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        (item_type, _ellipsis) = typing.get_args(expected)
        return tuple(_check_type(item, item_type, key) for item in value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and not isinstance(value, bool):
        raise ConfigError(f"config key {key}: expected true or false, got {value!r}")
    if expected in (int, float) and isinstance(value, bool):
        raise ConfigError(f"config key {key}: expected a number, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"config key {key}: expected {expected.__name__}, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    tables = [f.name for f in dataclasses.fields(cls) if f.metadata.get("subtables")]
    if tables:  # sub-tables of names that are not fields: the architectures' own settings, checked by them
        values = dict(values)
        given = values.pop(tables[0], {})
        values[tables[0]] = {
            **given,
            **{key: values.pop(key) for key in list(values) if key not in known and isinstance(values[key], dict)},
        }
    unknown = sorted(set(values) - known)
    if unknown:
        moved = MOVED.get(f"{prefix}{unknown[0]}")
        if moved:
            raise ConfigError(f"config key {prefix}{unknown[0]} is now {moved} (the architecture's own settings)")
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in values.items():
        expected = hints[name]
        if dataclasses.is_dataclass(expected):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {prefix}{name} is a section, not a value")
            kwargs[name] = _build(expected, value, f"{prefix}{name}.")
        elif name in tables:
            kwargs[name] = value
        else:
            kwargs[name] = _check_type(value, expected, prefix + name)
    return cls(**kwargs)


def build_settings(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """A settings dataclass (a section, or an architecture's own settings) from its table, every key
    known and of its type, or a ConfigError naming the key."""
    return _build(cls, values, prefix)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def split_overrides(text: str) -> list[str]:
    """`"train.epochs=5 data.validation_subjects=[1, 2]"` -> two overrides: a new one starts only
    where a `section.key=` follows a space, so values may hold spaces (lists, quoted text)."""
    return [part for part in re.split(r"\s+(?=[A-Za-z_]\w*(?:\.\w+)+=)", text.strip()) if part]


def parse_override(text: str) -> dict[str, Any]:
    """`"data.test_noise=0.8"` -> {"data": {"test_noise": 0.8}}; values are read as TOML, else as text."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    dotted, raw_value = text.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = tomllib.loads(f"v = {raw_value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw_value.strip()
    nested: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        nested = {key: nested}
    return nested


def field_reasons(cls: type) -> dict[str, str]:
    """Each field of a config dataclass with the reason its source gives: the comment lines directly
    above the field and the comments on its own lines ("" where it has none)."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    source = textwrap.dedent(inspect.getsource(cls))
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    reasons: dict[str, str] = {}
    previous: tuple[int, str] = (0, "")  # (last line, group comment) of the field above
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above, line = [], node.lineno - 1
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            end = node.end_lineno or node.lineno
            own = [comments[number] for number in range(node.lineno, end + 1) if number in comments]
            # a field with no comment of its own right below another shares the comment block above
            # that one (a group comment: "parallel convolutions ... each front_end_filters wide")
            group = " ".join(above) or (previous[1] if previous[0] == node.lineno - 1 else "")
            reasons[node.target.id] = " ".join(above + own) or group
            previous = (end, "" if own else group)  # a field's own comment ends the group
    return reasons


def explained(experiment: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every resolved setting as {key, value, source, reason}: source is "default", the experiment
    file, or "set" (an override); the reason is the one config.py gives beside the field. An
    architecture's own table ([model.<name>]) is listed key by key; its reasons are in its model file."""
    final, from_file, defaults = (
        flattened(config.to_dict())
        for config in (load_config(experiment, overrides), load_config(experiment), load_config(None))
    )
    classes = {section.name: section.type for section in dataclasses.fields(Config)}
    rows = []
    for key, value in final.items():
        section, _, name = key.partition(".")
        owner = globals()[classes[section]] if isinstance(classes[section], str) else classes[section]
        reason = (
            field_reasons(owner).get(name, "")
            if "." not in name
            else f"model.{name.split('.')[0]}'s own setting (its model file; `make models` lists them)"
        )
        source = "set" if value != from_file.get(key) else str(experiment) if value != defaults.get(key) else "default"
        rows.append({"key": key, "value": value, "source": source, "reason": reason})
    return rows


def flattened(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"units": 64, "bilstm": {...}}} -> {"model.units": 64, "model.bilstm.backward_cell": ...}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flattened(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_config(experiment: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then the experiment TOML (if any), then the overrides, left to right."""
    values: dict[str, Any] = {}
    if experiment:
        path = Path(experiment)
        if not path.is_absolute() and not path.exists():
            path = PROJECT_ROOT / path
        if not path.is_file():
            raise ConfigError(f"{experiment}: experiment file not found")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: invalid TOML: {error}") from None
    for override in overrides:
        values = _deep_merge(values, parse_override(override))
    config = _build(Config, values, "")
    validate(config)
    return config


def validate(config: Config) -> None:
    """The rules that join two sections; each section checks its own fields as it is built (__post_init__)."""
    if config.cv.refit and (config.cv.fold != -1 or config.train.early_stopping):
        raise ConfigError(
            "cv.refit trains on every labeled series for a fixed epoch count: it needs cv.fold = -1 and train.early_stopping = false"
        )
