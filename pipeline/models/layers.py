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
from keras import layers

from pipeline.config import Config, RegularizationConfig
from pipeline.models import augment

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
    """Input -> rotation -> Normalization (training statistics) -> augmentation -> GaussianNoise
    -> input dropout -> deep input MLP. Augmentation and noise act only in training."""
    channels = input_shape[-1]
    mean = np.zeros(channels) if mean is None else np.asarray(mean, dtype=np.float64)
    variance = np.ones(channels) if variance is None else np.asarray(variance, dtype=np.float64)
    if mean.shape != (channels,) or variance.shape != (channels,):
        raise ValueError(f"mean and variance must have {channels} values, got {mean.shape} and {variance.shape}")
    inputs = keras.Input(shape=input_shape, name="series")
    x = inputs
    for layer in augment.raw_augmentations(config.augment, config.train.seed):
        x = layer(x)
    x = layers.Normalization(axis=-1, mean=mean.tolist(), variance=variance.tolist(), name="normalization")(x)
    for layer in augment.normalized_augmentations(config.augment, config.train.seed):
        x = layer(x)
    regularization = config.regularization
    if regularization.gaussian_noise > 0:
        x = layers.GaussianNoise(regularization.gaussian_noise, name="gaussian_noise")(x)
    if regularization.input_dropout > 0:
        x = layers.Dropout(regularization.input_dropout, name="input_dropout")(x)
    for index, size in enumerate(config.model.input_mlp):
        x = layers.Dense(size, activation="relu", name=f"input_mlp_{index + 1}", **dense_options(regularization))(x)
    return inputs, x


def classifier_head(x: Any, config: Config, num_classes: int) -> Any:
    """Deep hidden-to-output MLP (if any), dropout, and a float32 softmax (stable under mixed precision)."""
    regularization = config.regularization
    for index, size in enumerate(config.model.output_mlp):
        if regularization.dropout > 0:
            x = layers.Dropout(regularization.dropout, name=f"output_mlp_{index + 1}_dropout")(x)
        x = layers.Dense(size, activation="relu", name=f"output_mlp_{index + 1}", **dense_options(regularization))(x)
    if regularization.dropout > 0:
        x = layers.Dropout(regularization.dropout, name="head_dropout")(x)
    return layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities", **dense_options(regularization)
    )(x)
