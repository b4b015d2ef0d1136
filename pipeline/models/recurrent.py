"""Recurrent layers and the recurrent models of the lecture: one cell, bidirectional layers whose
halves may differ, stacked layers with residuals and pooling, the deep-transition cell of Pascanu
et al., and DeepConvLSTM-style convolutions before the recurrence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pipeline.runtime import import_keras

import_keras()  # on the TensorFlow backend, TensorFlow first, without its start-up noise

import keras
from keras import layers, ops

from pipeline.config import Config, ModelConfig, RegularizationConfig
from pipeline.errors import ConfigError
from pipeline.models.layers import PACKAGE, dense_options, recurrent_options

CELLS = {"lstm": layers.LSTM, "gru": layers.GRU, "rnn": layers.SimpleRNN}


@dataclasses.dataclass(frozen=True)
class BilstmSettings:
    """[model.bilstm]: the backward half may differ from the forward one (the lecture allows it)."""

    backward_cell: str = ""  # lstm | gru | rnn; empty = the same as model.cell
    backward_units: int = 0  # 0 = the same as model.units; with concat the output size is the sum of both

    def __post_init__(self) -> None:
        if self.backward_cell not in ("", *CELLS) or self.backward_units < 0:
            raise ConfigError("model.bilstm.backward_cell must be lstm, gru or rnn (or empty); backward_units >= 0")


@dataclasses.dataclass(frozen=True)
class DeepTransitionSettings:
    """[model.deep_transition]: the MLP between h(t-1) and h(t) (Pascanu et al.)."""

    layers: int = 2  # L layers of the transition MLP
    shortcut: bool = True  # a linear shortcut from h(t-1) to h(t) eases training

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise ConfigError(f"model.deep_transition.layers must be >= 1, got {self.layers}")


@dataclasses.dataclass(frozen=True)
class CnnLstmSettings:
    """[model.cnn_lstm]: the 1-D convolutions before the recurrent layers (DeepConvLSTM uses 64 filters)."""

    filters: int = 64
    kernel: int = 5  # in time steps
    layers: int = 2

    def __post_init__(self) -> None:
        if self.filters < 1 or self.kernel < 1 or self.layers < 0:
            raise ConfigError("model.cnn_lstm.filters and kernel must be >= 1, layers >= 0")


@keras.saving.register_keras_serializable(package=PACKAGE)
class HeterogeneousBidirectional(layers.Bidirectional):
    """Bidirectional whose forward and backward layers may differ in cell type and size.

    Keras' Bidirectional assumes equal halves when it computes its output shape; with `concat`
    the true size is the sum of both. Merge modes that add or multiply need equal sizes.
    """

    def __init__(
        self, layer: layers.Layer, merge_mode: str = "concat", backward_layer: layers.Layer | None = None, **kwargs: Any
    ):
        super().__init__(layer, merge_mode=merge_mode, backward_layer=backward_layer, **kwargs)
        forward_units, backward_units = self.forward_layer.units, self.backward_layer.units
        if merge_mode in ("sum", "ave", "mul") and forward_units != backward_units:
            raise ConfigError(
                f"merge_mode={merge_mode!r} needs equal forward and backward sizes, got {forward_units} and {backward_units}; use 'concat'"
            )
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
            return self.add_weight(
                name=name, shape=shape, initializer=initializer, regularizer=regularizer, constraint=constraint
            )

        units = self.units
        self.kernel = weight(
            "kernel", (input_shape[-1], units), "glorot_uniform", self.kernel_regularizer, self.kernel_constraint
        )
        # W_1 acts on h(t-1); W_2..W_L form the MLP of the transition. All are recurrent weights.
        self.transition_kernels = [
            weight(
                f"transition_kernel_{index + 1}",
                (units, units),
                "orthogonal" if index == 0 else "glorot_uniform",
                self.recurrent_regularizer,
                self.recurrent_constraint,
            )
            for index in range(self.transition_layers)
        ]
        self.biases = [
            weight(f"bias_{index + 1}", (units,), "zeros", self.bias_regularizer)
            for index in range(self.transition_layers)
        ]
        self.shortcut_kernel = (
            weight(
                "shortcut_kernel", (units, units), "orthogonal", self.recurrent_regularizer, self.recurrent_constraint
            )
            if self.shortcut
            else None
        )

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


def recurrent_dtype() -> dict[str, str]:
    """JAX's cuDNN RNN lowering accepts float32 only ("Unknown output type float16", seen on an H200):
    under mixed precision on JAX the recurrent layers (and their Bidirectional wrappers) compute in
    float32, everything else in float16."""
    if keras.backend.backend() == "jax" and keras.mixed_precision.global_policy().compute_dtype == "float16":
        return {"dtype": "float32"}
    return {}


def recurrent_layer(
    cell: str,
    units: int,
    regularization: RegularizationConfig,
    return_sequences: bool,
    name: str,
    use_cudnn: bool = True,
    **extra: Any,
) -> layers.Layer:
    """One LSTM / GRU / SimpleRNN layer with every regularizer from config."""
    if cell not in CELLS:
        raise ConfigError(f"unknown cell {cell!r} (known: {', '.join(CELLS)})")
    if cell in ("lstm", "gru"):
        extra["use_cudnn"] = "auto" if use_cudnn else False
        extra.update(recurrent_dtype())
    return CELLS[cell](
        units, return_sequences=return_sequences, name=name, **recurrent_options(regularization), **extra
    )


def bidirectional(
    model: ModelConfig,
    regularization: RegularizationConfig,
    units: int,
    return_sequences: bool,
    name: str,
    backward: BilstmSettings | None = None,
) -> layers.Layer:
    """A bidirectional layer; with `backward` settings, its backward half follows them."""
    forward = recurrent_layer(model.cell, units, regularization, return_sequences, f"{name}_forward", model.use_cudnn)
    backward_cell = (backward.backward_cell or model.cell) if backward else model.cell
    backward_units = (backward.backward_units or units) if backward else units
    if backward_cell == model.cell and backward_units == units:
        return layers.Bidirectional(forward, merge_mode=model.merge_mode, name=name, **recurrent_dtype())
    backward_layer = recurrent_layer(
        backward_cell,
        backward_units,
        regularization,
        return_sequences,
        f"{name}_backward",
        model.use_cudnn,
        go_backwards=True,
    )
    return HeterogeneousBidirectional(
        forward, merge_mode=model.merge_mode, backward_layer=backward_layer, name=name, **recurrent_dtype()
    )


def recurrent_stack(
    x: Any, config: Config, return_sequences: bool, prefix: str = "recurrent", backward: BilstmSettings | None = None
) -> Any:
    """model.layers recurrent layers, dropout between, optional residuals. Each layer is bidirectional
    per model.bidirectional_layers (one flag per layer) or, when that is empty, per model.bidirectional."""
    model, regularization = config.model, config.regularization
    if model.bidirectional_layers and len(model.bidirectional_layers) != model.layers:
        raise ConfigError(
            f"model.bidirectional_layers has {len(model.bidirectional_layers)} flags for {model.layers} layers"
        )
    for index in range(model.layers):
        last = index == model.layers - 1
        sequences = return_sequences or not last
        name = f"{prefix}_{index + 1}"
        if model.bidirectional_layers[index] if model.bidirectional_layers else model.bidirectional:
            layer = bidirectional(model, regularization, model.units, sequences, name, backward)
        else:
            layer = recurrent_layer(model.cell, model.units, regularization, sequences, name, model.use_cudnn)
        y = layer(x)
        if model.residual and index > 0 and sequences:
            # Shortcut: add the layer's input (projected when the sizes differ) to its output.
            shortcut = (
                x
                if x.shape[-1] == y.shape[-1]
                else layers.Dense(y.shape[-1], name=f"{name}_shortcut", **dense_options(regularization))(x)
            )
            y = layers.Add(name=f"{name}_residual")([y, shortcut])
        x = y
        if regularization.dropout > 0 and not last:
            x = layers.Dropout(regularization.dropout, name=f"{name}_dropout")(x)
    return x


def pooled_stack(x: Any, config: Config, prefix: str = "recurrent", backward: BilstmSettings | None = None) -> Any:
    """The recurrent stack read out per model.pooling: its final state, or a pooling of its output at
    every step (which weighs the whole window, not what the last steps left in the state)."""
    pooling = config.model.pooling
    if pooling == "last":
        return recurrent_stack(x, config, return_sequences=False, prefix=prefix, backward=backward)
    sequences = recurrent_stack(x, config, return_sequences=True, prefix=prefix, backward=backward)
    pooled = []
    if pooling in ("average", "average-max"):
        pooled.append(layers.GlobalAveragePooling1D(name="average_pooling")(sequences))
    if pooling in ("max", "average-max"):
        pooled.append(layers.GlobalMaxPooling1D(name="max_pooling")(sequences))
    return pooled[0] if len(pooled) == 1 else layers.Concatenate(name="pooling")(pooled)


def replace_model(config: Config, **changes: Any) -> Config:
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **changes))


def single_cell(cell: str) -> Callable[[Config, Any, None], Any]:
    def body(config: Config, x: Any, settings: None) -> Any:
        return recurrent_layer(
            cell, config.model.units, config.regularization, False, f"{cell}_1", config.model.use_cudnn
        )(x)

    return body


def bilstm(config: Config, x: Any, settings: BilstmSettings) -> Any:
    return pooled_stack(x, replace_model(config, bidirectional=True), prefix="bidirectional", backward=settings)


def stacked(config: Config, x: Any, settings: None) -> Any:
    return pooled_stack(x, config)


def deep_transition(config: Config, x: Any, settings: DeepTransitionSettings) -> Any:
    """model.layers deep-transition layers (bidirectional if model.bidirectional), dropout between."""
    model, regularization = config.model, config.regularization
    options = recurrent_options(regularization)
    for index in range(model.layers):
        last = index == model.layers - 1
        name = f"deep_transition_{index + 1}"
        cell = DeepTransitionCell(model.units, settings.layers, settings.shortcut, name=f"{name}_cell", **options)
        layer = layers.RNN(cell, return_sequences=not last, name=name)
        x = (
            layers.Bidirectional(layer, merge_mode="concat", name=f"{name}_bidirectional")
            if model.bidirectional
            else layer
        )(x)
        if regularization.dropout > 0 and not last:
            x = layers.Dropout(regularization.dropout, name=f"{name}_dropout")(x)
    return x


def cnn_lstm(config: Config, x: Any, settings: CnnLstmSettings) -> Any:
    for index in range(settings.layers):
        x = layers.Conv1D(
            settings.filters,
            settings.kernel,
            padding="same",
            activation="relu",
            name=f"conv_{index + 1}",
            **dense_options(config.regularization),
        )(x)
    return pooled_stack(x, config)
