"""Soft (Bahdanau, additive) attention: the layer, and a classifier that pools a recurrent encoder's
outputs with it (the weights are what `make evaluate` plots).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.runtime import import_keras

import_keras()  # on the TensorFlow backend, TensorFlow first, without its start-up noise

import keras
from keras import layers, ops

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.models.layers import PACKAGE, max_norm, penalty
from pipeline.models.recurrent import recurrent_stack


@dataclass(frozen=True)
class AttentionSettings:
    """[model.attention]: the additive attention that pools the encoder's outputs."""

    units: int = 64  # the size of its hidden layer (W and v)

    def __post_init__(self) -> None:
        if self.units < 1:
            raise ConfigError(f"model.attention.units must be >= 1, got {self.units}")


@keras.saving.register_keras_serializable(package=PACKAGE)
class BahdanauAttention(layers.Layer):
    """Additive attention (Bahdanau et al. 2014): e_j = v^T tanh(W_k h_j + W_q q + b), alpha = softmax(e).

    Called as `attention(keys)` it pools a sequence with a learned query (the bias b plays W_q q);
    called as `attention(keys, query)` it scores the keys against a decoder state. Returns the
    context sum_j alpha_j h_j (batch, key_dim) and the weights alpha (batch, time).
    """

    def __init__(self, units: int, kernel_regularizer: Any = None, kernel_constraint: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.units = units
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)

    def build(self, keys_shape: tuple, query_shape: tuple | None = None) -> None:
        options = {"regularizer": self.kernel_regularizer, "constraint": self.kernel_constraint}
        self.key_kernel = self.add_weight(
            name="key_kernel", shape=(keys_shape[-1], self.units), initializer="glorot_uniform", **options
        )
        self.query_kernel = (
            self.add_weight(
                name="query_kernel", shape=(query_shape[-1], self.units), initializer="glorot_uniform", **options
            )
            if query_shape is not None
            else None
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.score_vector = self.add_weight(
            name="score_vector", shape=(self.units, 1), initializer="glorot_uniform", **options
        )

    def call(self, keys: Any, query: Any = None) -> tuple[Any, Any]:
        hidden = ops.matmul(keys, self.key_kernel) + self.bias
        if query is not None:
            hidden = hidden + ops.expand_dims(ops.matmul(query, self.query_kernel), 1)
        scores = ops.squeeze(ops.matmul(ops.tanh(hidden), self.score_vector), -1)
        weights = ops.softmax(ops.cast(scores, "float32"), axis=-1)  # float32 even under mixed precision
        context = ops.sum(ops.expand_dims(ops.cast(weights, keys.dtype), -1) * keys, axis=1)
        return context, weights

    def compute_output_shape(self, keys_shape: tuple, query_shape: tuple | None = None) -> tuple:
        return (keys_shape[0], keys_shape[-1]), (keys_shape[0], keys_shape[1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
        }


def attention_pooling(config: Config, x: Any, settings: AttentionSettings) -> Any:
    sequences = recurrent_stack(x, config, return_sequences=True, prefix="encoder")
    options = {
        "kernel_regularizer": penalty(config.regularization.l1, config.regularization.l2),
        "kernel_constraint": max_norm(config.regularization.max_norm),
    }
    context, _weights = BahdanauAttention(settings.units, name="attention", **options)(sequences)
    return context
