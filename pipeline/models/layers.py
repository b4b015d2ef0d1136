"""Shared pieces of every model: regularizers and constraints from config, the input block
(normalization, augmentation, noise) and the classifier head. Custom layers are registered under
PACKAGE for `.keras` loading.
"""

from __future__ import annotations

from typing import Any

from pipeline.runtime import import_keras

import_keras()  # on the TensorFlow backend, TensorFlow first, without its start-up noise

import keras
import numpy as np
from keras import layers, ops

from pipeline.config import Config, RegularizationConfig
from pipeline.models.augment import normalized_augmentations, raw_augmentations
from pipeline.models.consistency import TWIN, NoisedTwin

PACKAGE = "har"  # the registered name of every custom layer: har>BahdanauAttention, ...


def penalty(l1: float, l2: float) -> keras.regularizers.Regularizer | None:
    """None, L1, L2 or L1L2 from two strengths (0 = off)."""
    if l1 and l2:
        return keras.regularizers.L1L2(l1=l1, l2=l2)
    if l1:
        return keras.regularizers.L1(l1)
    if l2:
        return keras.regularizers.L2(l2)
    return None


def max_norm(value: float) -> keras.constraints.Constraint | None:
    return keras.constraints.MaxNorm(value) if value > 0 else None


def recurrent_options(regularization: RegularizationConfig) -> dict[str, Any]:
    """Keyword arguments every recurrent layer and cell takes from the regularization config."""
    return {
        "kernel_regularizer": penalty(regularization.l1, regularization.l2),
        "recurrent_regularizer": penalty(regularization.recurrent_l1, regularization.recurrent_l2),
        "bias_regularizer": penalty(regularization.bias_l1, regularization.bias_l2),
        "kernel_constraint": max_norm(regularization.max_norm),
        "recurrent_constraint": max_norm(regularization.max_norm),
        "recurrent_dropout": regularization.recurrent_dropout,
    }


def dense_options(regularization: RegularizationConfig) -> dict[str, Any]:
    return {
        "kernel_regularizer": penalty(regularization.l1, regularization.l2),
        "bias_regularizer": penalty(regularization.bias_l1, regularization.bias_l2),
        "kernel_constraint": max_norm(regularization.max_norm),
    }


def input_block(
    config: Config, input_shape: tuple[int, int], mean: np.ndarray | None, variance: np.ndarray | None
) -> tuple[Any, Any]:
    """Input -> rotation -> Normalization (training statistics) -> augmentation -> the noised twin
    (consistency training) -> GaussianNoise -> input dropout -> deep input MLP. Augmentation and
    noise act only in training."""
    inputs, x = normalized_input(config, input_shape, mean, variance)
    return inputs, deep_input(config, x)


def normalized_input(
    config: Config, input_shape: tuple[int, int], mean: np.ndarray | None, variance: np.ndarray | None
) -> tuple[Any, Any]:
    """input_block up to (not including) the deep input MLP: the window every model reads, normalized
    with the training statistics, augmented and noised in training."""
    channels = input_shape[-1]
    mean = np.zeros(channels) if mean is None else np.asarray(mean, dtype=np.float64)
    variance = np.ones(channels) if variance is None else np.asarray(variance, dtype=np.float64)
    if mean.shape != (channels,) or variance.shape != (channels,):
        raise ValueError(f"mean and variance must have {channels} values, got {mean.shape} and {variance.shape}")
    inputs = keras.Input(shape=input_shape, name="series")
    x = inputs
    for layer in raw_augmentations(config.augment, config.train.seed):
        x = layer(x)
    x = layers.Normalization(axis=-1, mean=mean.tolist(), variance=variance.tolist(), name="normalization")(x)
    for layer in normalized_augmentations(config.augment, config.train.seed):
        x = layer(x)
    regularization = config.regularization
    if regularization.consistency > 0:  # training batches seen twice, clean and noised (pipeline.models.consistency)
        low, high = regularization.consistency_noise
        x = NoisedTwin(low, high, regularization.consistency, seed=config.train.seed, name=TWIN)(x)
    if regularization.gaussian_noise > 0:
        x = layers.GaussianNoise(regularization.gaussian_noise, name="gaussian_noise")(x)
    if regularization.input_dropout > 0:
        x = layers.Dropout(regularization.input_dropout, name="input_dropout")(x)
    return inputs, x


def deep_input(config: Config, x: Any) -> Any:
    """The deep input-to-hidden MLP (model.input_mlp), applied at every time step."""
    for index, size in enumerate(config.model.input_mlp):
        x = layers.Dense(
            size, activation="relu", name=f"input_mlp_{index + 1}", **dense_options(config.regularization)
        )(x)
    return x


@keras.saving.register_keras_serializable(package=PACKAGE)
class WindowStatistics(layers.Layer):
    """(batch, T, C) normalized window -> (batch, 4C [+ 3]): per channel mean, std, min and max over
    time, and, for `gravity_channels` (x, y, z), the direction of their mean in raw units as cosines
    to the axes (`gravity_mean`, `gravity_std`: the normalization of those channels, to undo it).
    Computed inside the model on the window it is given, noisy in training as at test."""

    def __init__(
        self,
        gravity_channels: tuple[int, ...] = (),
        gravity_mean: tuple[float, ...] = (),
        gravity_std: tuple[float, ...] = (),
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if (
            len(gravity_channels) not in (0, 3)
            or len(gravity_mean) != len(gravity_channels)
            or len(gravity_std) != len(gravity_channels)
        ):
            raise ValueError("gravity_channels, gravity_mean and gravity_std need 3 values each, or none")
        self.gravity_channels, self.gravity_mean, self.gravity_std = (
            tuple(gravity_channels),
            tuple(gravity_mean),
            tuple(gravity_std),
        )

    def call(self, window: Any) -> Any:
        parts = [ops.mean(window, axis=1), ops.std(window, axis=1), ops.min(window, axis=1), ops.max(window, axis=1)]
        if self.gravity_channels:
            raw = ops.take(window, list(self.gravity_channels), axis=-1) * ops.convert_to_tensor(
                self.gravity_std, window.dtype
            )
            mean = ops.mean(raw + ops.convert_to_tensor(self.gravity_mean, window.dtype), axis=1)
            parts.append(mean / (ops.sqrt(ops.sum(mean * mean, axis=-1, keepdims=True)) + 1e-6))
        return ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, window_shape: tuple) -> tuple:
        return (window_shape[0], 4 * window_shape[-1] + len(self.gravity_channels))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "gravity_channels": list(self.gravity_channels),
            "gravity_mean": list(self.gravity_mean),
            "gravity_std": list(self.gravity_std),
        }


def multi_scale_front_end(x: Any, config: Config) -> Any:
    """model.front_end: parallel 1-D convolutions of several kernel lengths, concatenated, batch-normalized,
    ReLU; with front_end_residual the (projected) input is added back."""
    model, options = config.model, dense_options(config.regularization)
    branches = [
        layers.Conv1D(model.front_end_filters, kernel, padding="same", name=f"front_end_k{kernel}", **options)(x)
        for kernel in model.front_end
    ]
    y = branches[0] if len(branches) == 1 else layers.Concatenate(name="front_end")(branches)
    y = layers.Activation("relu", name="front_end_relu")(layers.BatchNormalization(name="front_end_norm")(y))
    if model.front_end_residual:
        shortcut = layers.Dense(y.shape[-1], name="front_end_shortcut", **options)(x)
        y = layers.Add(name="front_end_residual")([y, shortcut])
    return y


def classifier_head(x: Any, config: Config, num_classes: int, wide: Any = None) -> Any:
    """Deep hidden-to-output MLP (if any), dropout, and a float32 softmax (stable under mixed precision).
    `wide`: the input of model.wide's linear path, whose logits are added to the deep path's."""
    regularization = config.regularization
    for index, size in enumerate(config.model.output_mlp):
        if regularization.dropout > 0:
            x = layers.Dropout(regularization.dropout, name=f"output_mlp_{index + 1}_dropout")(x)
        x = layers.Dense(size, activation="relu", name=f"output_mlp_{index + 1}", **dense_options(regularization))(x)
    if regularization.dropout > 0:
        x = layers.Dropout(regularization.dropout, name="head_dropout")(x)
    if wide is None:
        return layers.Dense(
            num_classes, activation="softmax", dtype="float32", name="probabilities", **dense_options(regularization)
        )(x)
    deep = layers.Dense(num_classes, dtype="float32", name="deep_logits", **dense_options(regularization))(x)
    linear = layers.Dense(num_classes, dtype="float32", name="wide_logits", **dense_options(regularization))(wide)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(
        layers.Add(name="logits")([deep, linear])
    )
