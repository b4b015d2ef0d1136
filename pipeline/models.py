"""The shared models module: every architecture of the lecture, one registry.

`build_model(config, input_shape, num_classes, mean, variance)` returns an uncompiled
`keras.Model` mapping raw series (batch, T, C) to class probabilities (batch, num_classes),
for any T and C. The per-channel normalization (statistics of the training split only) is the
model's first layer, so a saved model takes raw features.

Models (see MODELS, or `python -m pipeline.models`):
  lstm, gru          one recurrent layer: the course's baseline
  bilstm             bidirectional layers whose forward and backward cells may differ in type and size
  stacked            N recurrent layers, each optionally bidirectional, optional residual shortcuts
  deep_input         deep input-to-hidden: an MLP at every time step before the recurrence (Pascanu et al.)
  deep_output        deep hidden-to-output: an MLP between the recurrence and the softmax
  deep_transition    a recurrent cell with an L-layer MLP between h(t-1) and h(t), optional shortcut
  attention          a (Bi)LSTM encoder with Bahdanau (additive) attention pooling over time
  seq2seq            encoder-decoder (Bi)LSTM -> LSTM, decoding one class token; with attention or a fixed context
  cnn_lstm           DeepConvLSTM-style: 1-D convolutions, then recurrent layers

Custom layers use `keras.ops` only (not tied to TensorFlow) and are registered for `.keras` loading:
import this module before `keras.models.load_model` (`load_model` below does).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.runtime import import_keras

import_keras()  # on the TensorFlow backend, TensorFlow first, without its start-up noise

import keras  # noqa: E402
import numpy as np
from keras import layers, ops  # noqa: E402

from pipeline import augment
from pipeline.config import Config, ModelConfig, RegularizationConfig
from pipeline.errors import ConfigError

PACKAGE = "har"
CELLS = {"lstm": layers.LSTM, "gru": layers.GRU, "rnn": layers.SimpleRNN}


# ---- regularizers and layer options from config ----------------------------------------------


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


# ---- custom layers -----------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class HeterogeneousBidirectional(layers.Bidirectional):
    """Bidirectional whose forward and backward layers may differ in cell type and size.

    Keras' Bidirectional assumes equal halves when it computes its output shape; with `concat`
    the true size is the sum of both. Merge modes that add or multiply need equal sizes.
    """

    def __init__(self, layer: layers.Layer, merge_mode: str = "concat", backward_layer: layers.Layer | None = None, **kwargs: Any):
        super().__init__(layer, merge_mode=merge_mode, backward_layer=backward_layer, **kwargs)
        forward_units, backward_units = self.forward_layer.units, self.backward_layer.units
        if merge_mode in ("sum", "ave", "mul") and forward_units != backward_units:
            raise ConfigError(f"merge_mode={merge_mode!r} needs equal forward and backward sizes, got {forward_units} and {backward_units}; use 'concat'")
        if self.return_state:
            raise ValueError("HeterogeneousBidirectional does not return states")

    def compute_output_shape(self, sequences_shape: tuple, initial_state_shape: Any = None) -> Any:
        forward = tuple(self.forward_layer.compute_output_shape(sequences_shape))
        backward = tuple(self.backward_layer.compute_output_shape(sequences_shape))
        if self.merge_mode == "concat":
            return forward[:-1] + (forward[-1] + backward[-1],)
        if self.merge_mode is None:
            return [forward, backward]
        return forward


@keras.saving.register_keras_serializable(package=PACKAGE)
class DeepTransitionCell(layers.Layer):
    """Deep transition RNN cell (Pascanu et al. 2014), the lecture's formula:

        h_t = phi_h(W_L^T phi_{L-1}( ... phi_1(W_1^T h_{t-1} + U^T x_t + b_1) ... ) + b_L)

    With `shortcut`, a linear path S^T h_{t-1} is added inside phi_h, so gradients need not pass
    through all L layers at every step (the DT(S)-RNN of the paper).
    """

    def __init__(
        self,
        units: int,
        transition_layers: int = 2,
        shortcut: bool = True,
        activation: str = "tanh",
        hidden_activation: str = "tanh",
        kernel_regularizer: Any = None,
        recurrent_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        recurrent_constraint: Any = None,
        recurrent_dropout: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if units < 1 or transition_layers < 1:
            raise ValueError("units and transition_layers must be >= 1")
        self.units = units
        self.transition_layers = transition_layers
        self.shortcut = shortcut and transition_layers > 1
        self.activation = keras.activations.get(activation)
        self.hidden_activation = keras.activations.get(hidden_activation)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.recurrent_constraint = keras.constraints.get(recurrent_constraint)
        self.recurrent_dropout = recurrent_dropout
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.state_size = units
        self.output_size = units

    def build(self, input_shape: tuple) -> None:
        def weight(name: str, shape: tuple, initializer: str, regularizer: Any, constraint: Any = None) -> Any:
            return self.add_weight(name=name, shape=shape, initializer=initializer, regularizer=regularizer, constraint=constraint)

        units = self.units
        self.kernel = weight("kernel", (input_shape[-1], units), "glorot_uniform", self.kernel_regularizer, self.kernel_constraint)
        # W_1 acts on h(t-1); W_2..W_L form the MLP of the transition. All are recurrent weights.
        self.transition_kernels = [
            weight(f"transition_kernel_{index + 1}", (units, units), "orthogonal" if index == 0 else "glorot_uniform", self.recurrent_regularizer, self.recurrent_constraint)
            for index in range(self.transition_layers)
        ]
        self.biases = [weight(f"bias_{index + 1}", (units,), "zeros", self.bias_regularizer) for index in range(self.transition_layers)]
        self.shortcut_kernel = weight("shortcut_kernel", (units, units), "orthogonal", self.recurrent_regularizer, self.recurrent_constraint) if self.shortcut else None

    def call(self, inputs: Any, states: Any, training: bool = False) -> tuple[Any, list[Any]]:
        previous = states[0] if isinstance(states, (list, tuple)) else states
        if training and self.recurrent_dropout > 0:
            previous_in = keras.random.dropout(previous, self.recurrent_dropout, seed=self.seed_generator)
        else:
            previous_in = previous
        z = ops.matmul(inputs, self.kernel) + ops.matmul(previous_in, self.transition_kernels[0]) + self.biases[0]
        for index in range(1, self.transition_layers):
            z = ops.matmul(self.hidden_activation(z), self.transition_kernels[index]) + self.biases[index]
        if self.shortcut_kernel is not None:
            z = z + ops.matmul(previous_in, self.shortcut_kernel)
        output = self.activation(z)
        return output, [output]

    def get_initial_state(self, batch_size: int | None = None) -> list[Any]:
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype)]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "transition_layers": self.transition_layers,
            "shortcut": self.shortcut,
            "activation": keras.activations.serialize(self.activation),
            "hidden_activation": keras.activations.serialize(self.hidden_activation),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": keras.regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": keras.constraints.serialize(self.recurrent_constraint),
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }


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
        self.key_kernel = self.add_weight(name="key_kernel", shape=(keys_shape[-1], self.units), initializer="glorot_uniform", **options)
        self.query_kernel = (
            self.add_weight(name="query_kernel", shape=(query_shape[-1], self.units), initializer="glorot_uniform", **options) if query_shape is not None else None
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.score_vector = self.add_weight(name="score_vector", shape=(self.units, 1), initializer="glorot_uniform", **options)

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


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConstantTokens(layers.Layer):
    """(batch, ...) -> (batch, length) int32 tokens all equal to `token`: the START input of a decoder."""

    def __init__(self, token: int, length: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.token, self.length = token, length

    def call(self, reference: Any) -> Any:
        return ops.full((ops.shape(reference)[0], self.length), self.token, dtype="int32")

    def compute_output_shape(self, reference_shape: tuple) -> tuple:
        return (reference_shape[0], self.length)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "token": self.token, "length": self.length}


# ---- building blocks ---------------------------------------------------------------------------


def recurrent_dtype() -> dict[str, str]:
    """JAX's cuDNN RNN lowering accepts float32 only ("Unknown output type float16", seen on an H200):
    under mixed precision on JAX the recurrent layers (and their Bidirectional wrappers) compute in
    float32, everything else in float16."""
    if keras.backend.backend() == "jax" and keras.mixed_precision.global_policy().compute_dtype == "float16":
        return {"dtype": "float32"}
    return {}


def recurrent_layer(cell: str, units: int, regularization: RegularizationConfig, return_sequences: bool, name: str, use_cudnn: bool = True, **extra: Any) -> layers.Layer:
    """One LSTM / GRU / SimpleRNN layer with every regularizer from config."""
    if cell not in CELLS:
        raise ConfigError(f"unknown cell {cell!r} (known: {', '.join(CELLS)})")
    if cell in ("lstm", "gru"):
        extra["use_cudnn"] = "auto" if use_cudnn else False
        extra.update(recurrent_dtype())
    return CELLS[cell](units, return_sequences=return_sequences, name=name, **recurrent_options(regularization), **extra)


def bidirectional(model: ModelConfig, regularization: RegularizationConfig, units: int, return_sequences: bool, name: str, heterogeneous: bool = False) -> layers.Layer:
    """A bidirectional layer; with `heterogeneous`, the backward half follows model.backward_cell/backward_units."""
    forward = recurrent_layer(model.cell, units, regularization, return_sequences, f"{name}_forward", model.use_cudnn)
    backward_cell = (model.backward_cell or model.cell) if heterogeneous else model.cell
    backward_units = (model.backward_units or units) if heterogeneous else units
    if backward_cell == model.cell and backward_units == units:
        return layers.Bidirectional(forward, merge_mode=model.merge_mode, name=name, **recurrent_dtype())
    backward = recurrent_layer(backward_cell, backward_units, regularization, return_sequences, f"{name}_backward", model.use_cudnn, go_backwards=True)
    return HeterogeneousBidirectional(forward, merge_mode=model.merge_mode, backward_layer=backward, name=name, **recurrent_dtype())


def recurrent_stack(x: Any, config: Config, return_sequences: bool, prefix: str = "recurrent", heterogeneous: bool = False) -> Any:
    """model.layers recurrent layers, dropout between, optional residuals. Each layer is bidirectional
    per model.bidirectional_layers (one flag per layer) or, when that is empty, per model.bidirectional."""
    model, regularization = config.model, config.regularization
    if model.bidirectional_layers and len(model.bidirectional_layers) != model.layers:
        raise ConfigError(f"model.bidirectional_layers has {len(model.bidirectional_layers)} flags for {model.layers} layers")
    for index in range(model.layers):
        last = index == model.layers - 1
        sequences = return_sequences or not last
        name = f"{prefix}_{index + 1}"
        if (model.bidirectional_layers[index] if model.bidirectional_layers else model.bidirectional):
            layer = bidirectional(model, regularization, model.units, sequences, name, heterogeneous)
        else:
            layer = recurrent_layer(model.cell, model.units, regularization, sequences, name, model.use_cudnn)
        y = layer(x)
        if model.residual and index > 0 and sequences:
            # Shortcut: add the layer's input (projected when the sizes differ) to its output.
            shortcut = x if x.shape[-1] == y.shape[-1] else layers.Dense(y.shape[-1], name=f"{name}_shortcut", **dense_options(regularization))(x)
            y = layers.Add(name=f"{name}_residual")([y, shortcut])
        x = y
        if regularization.dropout > 0 and not last:
            x = layers.Dropout(regularization.dropout, name=f"{name}_dropout")(x)
    return x


def pooled_stack(x: Any, config: Config, prefix: str = "recurrent", heterogeneous: bool = False) -> Any:
    """The recurrent stack read out per model.pooling: its final state, or a pooling of its output at
    every step (which weighs the whole window, not what the last steps left in the state)."""
    pooling = config.model.pooling
    if pooling == "last":
        return recurrent_stack(x, config, return_sequences=False, prefix=prefix, heterogeneous=heterogeneous)
    sequences = recurrent_stack(x, config, return_sequences=True, prefix=prefix, heterogeneous=heterogeneous)
    pooled = []
    if pooling in ("average", "average-max"):
        pooled.append(layers.GlobalAveragePooling1D(name="average_pooling")(sequences))
    if pooling in ("max", "average-max"):
        pooled.append(layers.GlobalMaxPooling1D(name="max_pooling")(sequences))
    return pooled[0] if len(pooled) == 1 else layers.Concatenate(name="pooling")(pooled)


def input_block(config: Config, input_shape: tuple[int, int], mean: np.ndarray | None, variance: np.ndarray | None) -> tuple[Any, Any]:
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
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities", **dense_options(regularization))(x)


# ---- the models --------------------------------------------------------------------------------


def _single(cell: str) -> Callable[[Config, Any], Any]:
    def body(config: Config, x: Any) -> Any:
        return recurrent_layer(cell, config.model.units, config.regularization, False, f"{cell}_1", config.model.use_cudnn)(x)

    return body


def _bilstm(config: Config, x: Any) -> Any:
    return pooled_stack(x, replace_model(config, bidirectional=True), prefix="bidirectional", heterogeneous=True)


def _stacked(config: Config, x: Any) -> Any:
    return pooled_stack(x, config)


def _deep_transition(config: Config, x: Any) -> Any:
    """model.layers deep-transition layers (bidirectional if model.bidirectional), dropout between."""
    model, regularization = config.model, config.regularization
    options = recurrent_options(regularization)
    for index in range(model.layers):
        last = index == model.layers - 1
        name = f"deep_transition_{index + 1}"
        cell = DeepTransitionCell(model.units, model.transition_layers, model.transition_shortcut, name=f"{name}_cell", **options)
        layer = layers.RNN(cell, return_sequences=not last, name=name)
        x = (layers.Bidirectional(layer, merge_mode="concat", name=f"{name}_bidirectional") if model.bidirectional else layer)(x)
        if regularization.dropout > 0 and not last:
            x = layers.Dropout(regularization.dropout, name=f"{name}_dropout")(x)
    return x


def _attention(config: Config, x: Any) -> Any:
    sequences = recurrent_stack(x, config, return_sequences=True, prefix="encoder")
    options = {"kernel_regularizer": penalty(config.regularization.l1, config.regularization.l2), "kernel_constraint": max_norm(config.regularization.max_norm)}
    context, _weights = BahdanauAttention(config.model.attention_units, name="attention", **options)(sequences)
    return context


def _cnn_lstm(config: Config, x: Any) -> Any:
    model = config.model
    for index in range(model.conv_layers):
        x = layers.Conv1D(model.conv_filters, model.conv_kernel, padding="same", activation="relu", name=f"conv_{index + 1}", **dense_options(config.regularization))(x)
    return pooled_stack(x, config)


# Token ids of every seq2seq decoder: classes (or activities) start at FIRST_CLASS_TOKEN.
PAD_TOKEN, START_TOKEN, END_TOKEN, FIRST_CLASS_TOKEN = 0, 1, 2, 3


@dataclass
class Seq2SeqParts:
    """The layers of an encoder-decoder, shared by the training graph and the inference models."""

    attention: BahdanauAttention | None
    bridge_h: layers.Dense
    bridge_c: layers.Dense
    embedding: layers.Embedding
    cell: layers.LSTMCell
    output: layers.Dense


def seq2seq_parts(config: Config, vocabulary: int, output_size: int) -> Seq2SeqParts:
    model, regularization = config.model, config.regularization
    dense = dense_options(regularization)
    return Seq2SeqParts(
        attention=BahdanauAttention(model.attention_units, name="decoder_attention", kernel_regularizer=dense["kernel_regularizer"]) if model.seq2seq_attention else None,
        bridge_h=layers.Dense(model.decoder_units, activation="tanh", name="bridge_h", **dense),
        bridge_c=layers.Dense(model.decoder_units, activation="tanh", name="bridge_c", **dense),
        embedding=layers.Embedding(vocabulary, model.embedding_dim, name="token_embedding"),
        cell=layers.LSTMCell(model.decoder_units, name="decoder_cell", **recurrent_options(regularization)),
        output=layers.Dense(output_size, activation="softmax", dtype="float32", name="token_probabilities", **dense),
    )


def seq2seq_encode(config: Config, x: Any) -> tuple[Any, Any]:
    """Encoder: (Bi)LSTM stack -> (hidden sequence h_1..h_T, fixed context C = the final states)."""
    sequences = recurrent_stack(x, config, return_sequences=True, prefix="encoder")
    units = config.model.units
    if config.model.bidirectional and config.model.merge_mode == "concat":
        # The forward half ends at the last step, the backward half at the first.
        context = layers.Concatenate(name="context")([sequences[:, -1, :units], sequences[:, 0, units:]])
    else:
        context = layers.Identity(name="context")(sequences[:, -1, :])
    return sequences, context


def seq2seq_step(parts: Seq2SeqParts, token_embedding: Any, state: list[Any], sequences: Any, context: Any) -> tuple[Any, list[Any], Any]:
    """One decoder step: c_t from attention on s_{t-1} (or the fixed C), then LSTM, then softmax over tokens."""
    if parts.attention is not None:
        context, weights = parts.attention(sequences, state[0])
    else:
        weights = None
    output, state = parts.cell(ops.concatenate([token_embedding, context], axis=-1), state)
    return parts.output(ops.concatenate([output, context], axis=-1)), state, weights


def seq2seq_decode_teacher_forced(parts: Seq2SeqParts, tokens: Any, sequences: Any, context: Any, steps: int) -> Any:
    """Training graph: the decoder reads the true previous tokens (teacher forcing), unrolled for `steps`."""
    state = [parts.bridge_h(context), parts.bridge_c(context)]
    embedded = parts.embedding(tokens)
    outputs = []
    for step in range(steps):
        probabilities, state, _weights = seq2seq_step(parts, embedded[:, step], state, sequences, context)
        outputs.append(probabilities)
    return ops.stack(outputs, axis=1)


def _seq2seq_classifier(config: Config, x: Any, num_classes: int) -> Any:
    sequences, context = seq2seq_encode(config, x)
    parts = seq2seq_parts(config, vocabulary=FIRST_CLASS_TOKEN + num_classes, output_size=num_classes)
    start = ConstantTokens(START_TOKEN, 1, name="start_token")(x)
    probabilities = seq2seq_decode_teacher_forced(parts, start, sequences, context, steps=1)
    return layers.Identity(name="probabilities", dtype="float32")(probabilities[:, 0])


@dataclass(frozen=True)
class ModelSpec:
    description: str
    body: Callable[..., Any]
    defaults: dict[str, Any]
    has_head: bool = True


MODELS: dict[str, ModelSpec] = {
    "lstm": ModelSpec("one LSTM layer: the course's baseline", _single("lstm"), {}),
    "gru": ModelSpec("one GRU layer", _single("gru"), {}),
    "bilstm": ModelSpec("bidirectional layers; backward cell type and size may differ (backward_cell, backward_units)", _bilstm, {}),
    "stacked": ModelSpec("N recurrent layers, each optionally bidirectional, optional residual shortcuts", _stacked, {}),
    "deep_input": ModelSpec("deep input-to-hidden: an MLP at every time step, then the recurrent stack", _stacked, {"input_mlp": (64, 64)}),
    "deep_output": ModelSpec("deep hidden-to-output: the recurrent stack, then an MLP head", _stacked, {"output_mlp": (64, 64)}),
    "deep_transition": ModelSpec("deep transition cell: an L-layer MLP between h(t-1) and h(t), with shortcut", _deep_transition, {}),
    "attention": ModelSpec("(Bi)LSTM encoder with Bahdanau additive attention pooling over time", _attention, {}),
    "seq2seq": ModelSpec("encoder (Bi)LSTM -> LSTM decoder with Bahdanau attention per step (or a fixed context), one class token", _seq2seq_classifier, {}, has_head=False),
    "cnn_lstm": ModelSpec("DeepConvLSTM-style: 1-D convolutions, then recurrent layers", _cnn_lstm, {}),
}


def replace_model(config: Config, **changes: Any) -> Config:
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **changes))


def effective_config(config: Config) -> Config:
    """Apply a model's own defaults where the config leaves them empty (e.g. deep_input's MLP)."""
    spec = MODELS[config.model.name]
    changes = {key: value for key, value in spec.defaults.items() if not getattr(config.model, key)}
    return replace_model(config, **changes) if changes else config


def build_model(config: Config, input_shape: tuple[int, int], num_classes: int, mean: np.ndarray | None = None, variance: np.ndarray | None = None) -> keras.Model:
    """The registered model `config.model.name` for series of `input_shape` = (T, C) and `num_classes` classes."""
    if config.model.name not in MODELS:
        raise ConfigError(f"unknown model {config.model.name!r} (known: {', '.join(MODELS)})")
    if len(input_shape) != 2 or min(input_shape) < 1 or num_classes < 2:
        raise ValueError(f"need input_shape (T, C) and at least 2 classes, got {input_shape} and {num_classes}")
    config = effective_config(config)
    spec = MODELS[config.model.name]
    inputs, x = input_block(config, tuple(input_shape), mean, variance)
    if spec.has_head:
        outputs = classifier_head(spec.body(config, x), config, num_classes)
    else:
        outputs = spec.body(config, x, num_classes)
    model = keras.Model(inputs, outputs, name=config.model.name)
    warn_if_not_fused(model)
    return model


# ---- seq2seq for sequences: training graph and greedy / beam decoding --------------------------


def build_seq2seq(config: Config, input_shape: tuple[int, int], num_tokens: int, max_output_length: int, mean: np.ndarray | None = None, variance: np.ndarray | None = None) -> keras.Model:
    """Encoder-decoder trained with teacher forcing: inputs (series, previous tokens), output (batch, steps, vocabulary).

    The vocabulary is PAD, START, END and `num_tokens` symbols from FIRST_CLASS_TOKEN on; targets
    are the input tokens shifted left by one, ending with END.
    """
    inputs, x = input_block(config, tuple(input_shape), mean, variance)
    sequences, context = seq2seq_encode(config, x)
    vocabulary = FIRST_CLASS_TOKEN + num_tokens
    parts = seq2seq_parts(config, vocabulary, vocabulary)
    tokens = keras.Input(shape=(max_output_length,), dtype="int32", name="previous_tokens")
    probabilities = seq2seq_decode_teacher_forced(parts, tokens, sequences, context, max_output_length)
    return keras.Model([inputs, tokens], probabilities, name="seq2seq_attention" if config.model.seq2seq_attention else "seq2seq_fixed_context")


@dataclass
class Decoded:
    """A decoded sequence: tokens (without START/END), its log-probability, and the alignment (steps, T) or None."""

    tokens: list[int]
    log_probability: float
    alignment: np.ndarray | None


class Seq2SeqDecoder:
    """Separate encoder and one-step decoder models built from a trained seq2seq model's layers.

    They are called directly in the decoding loop (calling `predict` per step would retrace).
    """

    def __init__(self, model: keras.Model):
        self.vocabulary = model.get_layer("token_embedding").input_dim
        sequences_layer = _last_encoder_layer(model)
        self.encoder = keras.Model(model.inputs[0], [sequences_layer.output, model.get_layer("context").output])
        embedding = model.get_layer("token_embedding")
        attention = model.get_layer("decoder_attention") if any(layer.name == "decoder_attention" for layer in model.layers) else None
        parts = Seq2SeqParts(attention, model.get_layer("bridge_h"), model.get_layer("bridge_c"), embedding, model.get_layer("decoder_cell"), model.get_layer("token_probabilities"))
        self.parts = parts
        sequences = keras.Input(shape=tuple(sequences_layer.output.shape[1:]), name="encoder_sequences")
        context = keras.Input(shape=tuple(model.get_layer("context").output.shape[1:]), name="encoder_context")
        units = parts.cell.units
        state = [keras.Input(shape=(units,), name="state_h"), keras.Input(shape=(units,), name="state_c")]
        token = keras.Input(shape=(), dtype="int32", name="token")
        probabilities, new_state, weights = seq2seq_step(parts, embedding(token), state, sequences, context)
        if weights is None:
            weights = ops.zeros_like(sequences[:, :, 0])  # no alignment without attention
        self.step = keras.Model([token, *state, sequences, context], [probabilities, *new_state, weights])
        self.bridge = keras.Model(context, [parts.bridge_h(context), parts.bridge_c(context)])
        self.has_attention = attention is not None

    def _start(self, series: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        sequences, context = (np.asarray(t) for t in self.encoder(series, training=False))
        state = [np.asarray(t) for t in self.bridge(context, training=False)]
        return sequences, context, state

    def greedy(self, series: np.ndarray, max_length: int) -> list[Decoded]:
        """Pick the most likely token at every step until END or `max_length` tokens."""
        sequences, context, state = self._start(series)
        count = len(series)
        token = np.full(count, START_TOKEN, np.int32)
        results = [Decoded([], 0.0, None) for _ in range(count)]
        alignments: list[list[np.ndarray]] = [[] for _ in range(count)]
        done = np.zeros(count, bool)
        for _step in range(max_length + 1):
            probabilities, h, c, weights = (np.asarray(t) for t in self.step([token, *state, sequences, context], training=False))
            token = probabilities.argmax(-1).astype(np.int32)
            for index in np.flatnonzero(~done):
                results[index].log_probability += float(np.log(probabilities[index, token[index]] + 1e-12))
                alignments[index].append(weights[index])
                if token[index] == END_TOKEN or len(results[index].tokens) == max_length:
                    done[index] = True
                else:
                    results[index].tokens.append(int(token[index]))
            state = [h, c]
            if done.all():
                break
        for index, result in enumerate(results):
            result.alignment = np.stack(alignments[index]) if self.has_attention else None
        return results

    def beam(self, series: np.ndarray, max_length: int, width: int = 4) -> list[Decoded]:
        """Beam search per series, scored by log-probability. The greedy result is a candidate too,
        so beam search never returns a sequence less likely than greedy decoding's."""
        greedy = self.greedy(series, max_length)
        results = []
        for index in range(len(series)):
            best = self._beam_one(series[index : index + 1], max_length, width)
            results.append(best if best.log_probability >= greedy[index].log_probability else greedy[index])
        return results

    def _beam_one(self, series: np.ndarray, max_length: int, width: int) -> Decoded:
        sequences, context, state = self._start(series)
        # Each hypothesis: (log-probability, tokens, state, alignment rows)
        beams = [(0.0, [], state, [])]
        finished: list[tuple[float, list[int], list[np.ndarray]]] = []
        for _step in range(max_length + 1):
            tokens = np.array([b[1][-1] if b[1] else START_TOKEN for b in beams], np.int32)
            h = np.concatenate([b[2][0] for b in beams])
            c = np.concatenate([b[2][1] for b in beams])
            repeat = len(beams)
            probabilities, h_new, c_new, weights = (
                np.asarray(t) for t in self.step([tokens, h, c, np.repeat(sequences, repeat, 0), np.repeat(context, repeat, 0)], training=False)
            )
            candidates = []
            for row, (score, prefix, _state, rows) in enumerate(beams):
                log_p = np.log(probabilities[row] + 1e-12)
                for token in np.argsort(log_p)[::-1][:width]:
                    candidates.append((score + float(log_p[token]), prefix, int(token), row, rows + [weights[row]]))
            candidates.sort(key=lambda item: -item[0])
            beams = []
            for score, prefix, token, row, rows in candidates:
                if token == END_TOKEN or len(prefix) == max_length:
                    finished.append((score, prefix if token == END_TOKEN else prefix, rows))
                else:
                    beams.append((score, prefix + [token], [h_new[row : row + 1], c_new[row : row + 1]], rows))
                if len(beams) == width:
                    break
            # Stop when no open hypothesis can beat the best finished one (scores only fall).
            if not beams or (finished and max(f[0] for f in finished) >= beams[0][0]):
                break
        if not finished:
            finished = [(score, prefix, rows) for score, prefix, _state, rows in beams]
        score, tokens, rows = max(finished, key=lambda item: item[0])
        return Decoded(tokens, score, np.stack(rows) if self.has_attention else None)


def _last_encoder_layer(model: keras.Model) -> layers.Layer:
    names = [layer.name for layer in model.layers if layer.name.startswith("encoder_") and not layer.name.endswith(("_dropout", "_shortcut"))]
    return model.get_layer(names[-1])


# ---- inspection ----------------------------------------------------------------------------------


def attention_model(model: keras.Model) -> keras.Model:
    """series -> attention weights (batch, T) of an `attention` model, for plots."""
    return keras.Model(model.input, model.get_layer("attention").output[1])


def input_gradients(model: keras.Model, series: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """d (summed cross-entropy) / d input, same shape as `series`, through each backend's own autodiff."""
    backend = keras.backend.backend()
    loss = keras.losses.categorical_crossentropy
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(series)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_sum(loss(targets, model(x, training=False)))
        return tape.gradient(value, x).numpy()
    if backend == "jax":
        import jax

        trainable = [variable.value for variable in model.trainable_variables]
        non_trainable = [variable.value for variable in model.non_trainable_variables]

        def summed_loss(x: Any) -> Any:
            outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return ops.sum(loss(targets, outputs))

        return np.asarray(jax.grad(summed_loss)(jax.numpy.asarray(series)))
    x = ops.convert_to_tensor(series)  # torch: on the backend's default device
    x.requires_grad_(True)
    ops.sum(loss(ops.convert_to_tensor(targets), model(x, training=False))).backward()
    return x.grad.detach().cpu().numpy()


def recurrent_layers(model: keras.Model) -> list[layers.Layer]:
    """Every recurrent layer, with the halves of Bidirectional wrappers listed separately."""
    found = []
    for layer in model.layers:
        if isinstance(layer, layers.Bidirectional):
            found += [layer.forward_layer, layer.backward_layer]
        elif isinstance(layer, layers.RNN):
            found.append(layer)
    return found


def fused_path_report(model: keras.Model) -> list[tuple[str, bool, str]]:
    """(layer, runs fused on a GPU, why) for each recurrent layer, per GUIDE section 5's cuDNN rules."""
    report = []
    for layer in recurrent_layers(model):
        reasons = []
        if isinstance(layer, (layers.LSTM, layers.GRU)):
            if keras.activations.serialize(layer.cell.activation) != "tanh":
                reasons.append("activation is not tanh")
            if keras.activations.serialize(layer.cell.recurrent_activation) != "sigmoid":
                reasons.append("recurrent activation is not sigmoid")
            if layer.cell.recurrent_dropout > 0:
                reasons.append("recurrent_dropout > 0")
            if layer.unroll:
                reasons.append("unroll=True")
            if not layer.cell.use_bias:
                reasons.append("use_bias=False")
            if isinstance(layer, layers.GRU) and not layer.cell.reset_after:
                reasons.append("GRU reset_after=False")
        elif isinstance(layer, layers.SimpleRNN):
            reasons.append("SimpleRNN has no fused kernel")
        else:
            reasons.append(f"custom cell {type(layer.cell).__name__} runs step by step")
        report.append((layer.name, not reasons, "; ".join(reasons) or "cuDNN-eligible"))
    # Decoder cells called step by step are never fused.
    for layer in model.layers:
        if isinstance(layer, (layers.LSTMCell, layers.GRUCell)):
            report.append((layer.name, False, "decoder cell called one step at a time"))
    return report


FUSED_KERNELS = ("lstm", "gru", "bidirectional_lstm", "bidirectional_gru")


def observed_kernel_paths(model: keras.Model, series: np.ndarray) -> list[dict[str, Any]]:
    """Run `model` once on `series` and record which recurrent kernel each layer really ran.

    `fused_path_report` predicts from the rules; this watches Keras' dispatch point: every
    LSTM/GRU layer (and Bidirectional wrapper) first calls its backend's fused kernel
    (`keras.src.backend.lstm`, `bidirectional_lstm`, ...) and falls back to the step-by-step
    RNN loop when that raises NotImplementedError. On PyTorch the fused LSTM/GRU may also fall
    back silently to a plain loop, so the cuDNN helper is watched too. Rows: layer, kernels tried
    with their outcome, and the path: "cuDNN", "fused loop (no cuDNN)" or "step loop".
    """
    from keras.src import backend as dispatch  # the module the recurrent layers call through

    backend = keras.backend.backend()
    stack: list[str] = []
    attributed: dict[str, list[tuple[str, str]]] = {}
    originals: dict[tuple[Any, str], Any] = {}

    def patch(owner: Any, name: str, wrapper: Any) -> None:
        originals[(owner, name)] = getattr(owner, name)
        setattr(owner, name, wrapper)

    def watch_kernel(name: str, function: Any) -> Any:
        def watched(*args: Any, **kwargs: Any) -> Any:
            try:
                result = function(*args, **kwargs)
            except NotImplementedError:
                if stack:
                    attributed.setdefault(stack[0], []).append((name, "not available"))
                raise
            if backend == "torch" and name in ("lstm", "gru"):  # may fall back to a plain loop inside
                outcome = "ran on cuDNN" if cudnn_hits[name] else "ran without cuDNN"
                cudnn_hits[name] = 0
            elif backend == "jax" and name == "gru":
                outcome = "ran as a scan (JAX has no cuDNN GRU)"
            else:  # TF and JAX run these only on a GPU with cuDNN; torch's bidirectional ones only on CUDA
                outcome = "ran on cuDNN"
            if stack:
                attributed.setdefault(stack[0], []).append((name, outcome))
            return result

        return watched

    def watch_layer(layer: layers.Layer) -> None:
        original = layer.call

        def call(*args: Any, **kwargs: Any) -> Any:
            stack.append(layer.name)
            try:
                return original(*args, **kwargs)
            finally:
                stack.pop()

        originals[(layer, "call")] = None  # instance attribute: removed afterwards
        layer.call = call

    cudnn_hits = {"lstm": 0, "gru": 0}
    if backend == "torch":
        import importlib

        torch_rnn = importlib.import_module("keras.src.backend.torch.rnn")

        for name in ("lstm", "gru"):
            helper = getattr(torch_rnn, f"_cudnn_{name}")

            def counted(*args: Any, _helper: Any = helper, _name: str = name, **kwargs: Any) -> Any:
                result = _helper(*args, **kwargs)
                cudnn_hits[_name] += 1
                return result

            patch(torch_rnn, f"_cudnn_{name}", counted)
    for name in FUSED_KERNELS:
        patch(dispatch, name, watch_kernel(name, getattr(dispatch, name)))
    watched_layers = [layer for layer in model.layers if isinstance(layer, (layers.RNN, layers.Bidirectional))]
    for layer in watched_layers:
        watch_layer(layer)
    try:
        model(series, training=False)
    finally:
        for (owner, name), original in originals.items():
            if original is None:
                del owner.__dict__[name]
            else:
                setattr(owner, name, original)
    rows = []
    for layer in watched_layers:
        tried = attributed.get(layer.name, [])
        outcomes = [outcome for _kernel, outcome in tried]
        path = "cuDNN" if "ran on cuDNN" in outcomes else "fused loop (no cuDNN)" if any(o.startswith("ran") for o in outcomes) else "step loop"
        rows.append({"layer": layer.name, "kernels": ", ".join(f"{kernel}: {outcome}" for kernel, outcome in tried) or "none called", "path": path})
    return rows


_warned: set[str] = set()


def warn_if_not_fused(model: keras.Model) -> None:
    """Warn once per reason when a config choice (not the architecture) loses the fused GPU kernel."""
    for name, fused, reason in fused_path_report(model):
        if not fused and "recurrent_dropout" in reason and reason not in _warned:
            _warned.add(reason)
            warnings.warn(f"{name}: {reason}: this layer will not use the fused cuDNN kernel on a GPU (slower)", stacklevel=3)


def save_model(model: keras.Model, path: Path) -> None:
    """Save a `.keras` file atomically: a temp file beside it, renamed into place when complete."""
    temp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(temp)
    temp.replace(path)


def load_model(path: str) -> keras.Model:
    """Load a `.keras` model saved from this module (its custom layers are registered on import)."""
    return keras.models.load_model(path)


def describe(input_shapes: tuple[tuple[int, int], ...] = ((5, 9), (128, 9)), num_classes: int = 6) -> list[dict[str, Any]]:
    """Parameter counts per model and input shape, with each model's description."""
    from pipeline.config import load_config

    rows = []
    for name, spec in MODELS.items():
        row: dict[str, Any] = {"model": name}
        for shape in input_shapes:
            model = build_model(load_config(None, [f"model.name={name}"]), shape, num_classes)
            row[f"params {shape[0]}x{shape[1]}"] = model.count_params()
        row["description"] = spec.description
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
