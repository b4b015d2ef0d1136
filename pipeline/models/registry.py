"""The model registry: every architecture by name (`model.name`), built from config.

`build_model(config, input_shape, num_classes, mean, variance)` returns an uncompiled `keras.Model`
mapping raw series (batch, T, C) to class probabilities (batch, num_classes), for any T and C. The
per-channel normalization (statistics of the training split only) is the model's first layer, so
a saved model takes raw features. `python -m pipeline.models` lists the models.

Adding an architecture is one file and one line here: the file holds its body (a `Body`, below)
and, where it has settings of its own, a frozen dataclass of them, read from the TOML table
[model.<name>] (`SET="model.<name>.<key>=..."`); the line is its `ModelSpec`. What every model has
(units, layers, cell, pooling, the input block, the head) stays in the shared [model] section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.runtime import import_keras

import_keras()  # on the TensorFlow backend, TensorFlow first, without its start-up noise

import keras
import numpy as np
from keras import layers

from pipeline.config import Config, build_settings
from pipeline.data.signals import gravity_channels
from pipeline.errors import ConfigError
from pipeline.models.attention import AttentionSettings, attention_pooling
from pipeline.models.consistency import ConsistencyModel
from pipeline.models.diagnostics import warn_if_not_fused
from pipeline.models.layers import (
    WindowStatistics,
    classifier_head,
    deep_input,
    multi_scale_front_end,
    normalized_input,
)
from pipeline.models.recurrent import (
    BilstmSettings,
    CnnLstmSettings,
    DeepTransitionSettings,
    bilstm,
    cnn_lstm,
    deep_transition,
    replace_model,
    single_cell,
    stacked,
)
from pipeline.models.seq2seq import Seq2SeqSettings, seq2seq_classifier


class Body(Protocol):
    """What a registered architecture builds, written once: given the config, the input block's output
    x (batch, T', C') and its own settings (an instance of its ModelSpec's `settings`, or None), it
    returns a summary (batch, features) that the shared head classifies. A body that decodes its own
    output (has_head False) is also given num_classes and returns the class probabilities."""

    def __call__(self, config: Config, x: Any, settings: Any, /, *num_classes: int) -> Any: ...


@dataclass(frozen=True)
class ModelSpec:
    description: str
    body: Body
    settings: type | None = None  # the dataclass of its [model.<name>] table; None: it has none
    defaults: dict[str, Any] | None = None  # its defaults of shared fields left empty (deep_input's MLP)
    has_head: bool = True


MODELS: dict[str, ModelSpec] = {
    "lstm": ModelSpec("one LSTM layer: the course's baseline", single_cell("lstm")),
    "gru": ModelSpec("one GRU layer", single_cell("gru")),
    "bilstm": ModelSpec("bidirectional layers; the backward half may differ in cell and size", bilstm, BilstmSettings),
    "stacked": ModelSpec("N recurrent layers, each optionally bidirectional, optional residual shortcuts", stacked),
    "deep_input": ModelSpec(
        "deep input-to-hidden: an MLP at every time step, then the recurrent stack",
        stacked,
        defaults={"input_mlp": (64, 64)},
    ),
    "deep_output": ModelSpec(
        "deep hidden-to-output: the recurrent stack, then an MLP head", stacked, defaults={"output_mlp": (64, 64)}
    ),
    "deep_transition": ModelSpec(
        "deep transition cell: an L-layer MLP between h(t-1) and h(t), with shortcut",
        deep_transition,
        DeepTransitionSettings,
    ),
    "attention": ModelSpec(
        "(Bi)LSTM encoder with Bahdanau additive attention pooling over time", attention_pooling, AttentionSettings
    ),
    "seq2seq": ModelSpec(
        "encoder (Bi)LSTM -> LSTM decoder with Bahdanau attention per step (or a fixed context), one class token",
        seq2seq_classifier,
        Seq2SeqSettings,
        has_head=False,
    ),
    "cnn_lstm": ModelSpec("DeepConvLSTM-style: 1-D convolutions, then recurrent layers", cnn_lstm, CnnLstmSettings),
}


def own_settings(config: Config, name: str | None = None) -> Any:
    """Architecture `name`'s (default: the configured model's) own settings, or None where it has none.
    Every [model.<name>] table given must name an architecture with settings, and read into them."""
    for table in config.model.settings:
        if table not in MODELS or MODELS[table].settings is None:
            with_settings = ", ".join(key for key, spec in MODELS.items() if spec.settings)
            raise ConfigError(
                f"model.{table}: no architecture of that name has settings of its own ({with_settings} have)"
            )
        build_settings(MODELS[table].settings, config.model.settings[table], f"model.{table}.")
    name = name or config.model.name
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    settings = MODELS[name].settings
    return None if settings is None else config.model.own(name, settings)


def effective_config(config: Config) -> Config:
    """Apply a model's own defaults where the config leaves them empty (e.g. deep_input's MLP)."""
    spec = MODELS[config.model.name]
    changes = {key: value for key, value in (spec.defaults or {}).items() if not getattr(config.model, key)}
    return replace_model(config, **changes) if changes else config


def downsample_factor(config: Config, steps: int) -> int:
    """Blocks averaged before the recurrence: model.downsample where set, else as many as keep the
    series at model.max_steps or under (classifiers only: seq2seq decodes from every step)."""
    if config.model.downsample > 1 or not MODELS[config.model.name].has_head:
        return config.model.downsample
    if config.model.max_steps and steps > config.model.max_steps:
        return math.ceil(steps / config.model.max_steps)
    return 1


def build_model(
    config: Config,
    input_shape: tuple[int, int],
    num_classes: int,
    mean: np.ndarray | None = None,
    variance: np.ndarray | None = None,
    channels: tuple[str, ...] = (),
) -> keras.Model:
    """The registered model `config.model.name` for series of `input_shape` = (T, C) and `num_classes` classes.
    `channels`: the channel names, where a branch needs them (model.window_stats finds the gravity channels)."""
    settings = own_settings(config)
    if len(input_shape) != 2 or min(input_shape) < 1 or num_classes < 2:
        raise ValueError(f"need input_shape (T, C) and at least 2 classes, got {input_shape} and {num_classes}")
    config = effective_config(config)
    spec = MODELS[config.model.name]
    inputs, window = normalized_input(config, tuple(input_shape), mean, variance)
    x = window
    factor = downsample_factor(config, input_shape[0])
    if factor > 1:  # blocks averaged: a shorter, less noisy series for the recurrence
        x = layers.AveragePooling1D(factor, padding="same", name=f"downsample_{factor}")(x)
    x = deep_input(config, x)
    if config.model.front_end:
        x = multi_scale_front_end(x, config)
    if spec.has_head:
        summary = spec.body(config, x, settings)
        stats = (
            window_statistics(window, channels, mean, variance)
            if config.model.window_stats or config.model.wide == "stats"
            else None
        )
        if config.model.window_stats:
            summary = layers.Concatenate(name="with_window_stats")([summary, stats])
        wide = None
        if config.model.wide == "input":
            wide = layers.Flatten(name="wide_input")(window)
        elif config.model.wide == "stats":
            wide = stats
        outputs = classifier_head(summary, config, num_classes, wide)
    else:
        outputs = spec.body(config, x, settings, num_classes)
    # with consistency training, a model whose training loss sees both views (pipeline.models.consistency)
    model_class = ConsistencyModel if config.regularization.consistency > 0 else keras.Model
    model = model_class(inputs, outputs, name=config.model.name)
    warn_if_not_fused(model)
    return model


def window_statistics(
    window: Any, channels: tuple[str, ...], mean: np.ndarray | None, variance: np.ndarray | None
) -> Any:
    """The statistics branch of model.window_stats on the normalized window (gravity direction where the channels name it)."""
    gravity = gravity_channels(channels)
    channel_count = window.shape[-1]
    mean = np.zeros(channel_count) if mean is None else np.asarray(mean, dtype=np.float64)
    std = np.sqrt(np.ones(channel_count) if variance is None else np.asarray(variance, dtype=np.float64))
    return WindowStatistics(
        gravity, tuple(float(mean[i]) for i in gravity), tuple(float(std[i]) for i in gravity), name="window_statistics"
    )(window)


def save_model(model: keras.Model, path: Path) -> None:
    """Save a `.keras` file atomically: a temp file beside it, renamed into place when complete."""
    temp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(temp)
    temp.replace(path)


def load_model(path: str) -> keras.Model:
    """Load a `.keras` model saved from this module (its custom layers are registered on import)."""
    return keras.models.load_model(path)


def describe(
    input_shapes: tuple[tuple[int, int], ...] = ((5, 9), (128, 9)), num_classes: int = 6
) -> list[dict[str, Any]]:
    """Parameter counts per model and input shape, with each model's description."""
    import dataclasses

    from pipeline.config import load_config

    rows = []
    for name, spec in MODELS.items():
        row: dict[str, Any] = {"model": name}
        for shape in input_shapes:
            model = build_model(load_config(None, [f"model.name={name}"]), shape, num_classes)
            row[f"params {shape[0]}x{shape[1]}"] = model.count_params()
        row["description"] = spec.description
        own = dataclasses.asdict(spec.settings()) if spec.settings else {}
        row["own settings [model.<name>]"] = ", ".join(f"{key}={value!r}" for key, value in own.items())
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    table = pd.DataFrame(describe())
    print(table.to_markdown(index=False))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
