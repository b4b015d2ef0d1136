"""What a trained model does inside: attention weights, input gradients through each backend's
autodiff, which recurrent layers keep the fused cuDNN path and which kernels really ran.
(Named diagnostics, not inspect, so that it never reads as the standard library's module.)
"""

from __future__ import annotations

import warnings
from typing import Any

from pipeline.runtime import import_keras

import_keras()  # on the TensorFlow backend, TensorFlow first, without its start-up noise

import keras
import numpy as np
from keras import layers, ops


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


def weight_gradients(
    model: keras.Model, series: np.ndarray, targets: np.ndarray, from_logits: bool = False
) -> list[np.ndarray]:
    """d (summed cross-entropy) / d each trainable weight, in model.trainable_variables order, through each
    backend's own autodiff (`targets` one-hot, shaped like the model's output): what the hand-written
    BPTT of pipeline.models.bptt is checked against."""
    backend = keras.backend.backend()

    def summed_loss(outputs: Any) -> Any:
        return ops.sum(keras.losses.categorical_crossentropy(targets, outputs, from_logits=from_logits))

    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = summed_loss(model(tf.convert_to_tensor(series), training=False))
        return [gradient.numpy() for gradient in tape.gradient(value, model.trainable_variables)]
    if backend == "jax":
        import jax

        non_trainable = [variable.value for variable in model.non_trainable_variables]

        def loss_of(trainable: list[Any]) -> Any:
            outputs, _ = model.stateless_call(trainable, non_trainable, jax.numpy.asarray(series), training=False)
            return summed_loss(outputs)

        return [
            np.asarray(gradient)
            for gradient in jax.grad(loss_of)([variable.value for variable in model.trainable_variables])
        ]
    for variable in model.trainable_variables:  # torch
        variable.value.grad = None
    summed_loss(model(ops.convert_to_tensor(series), training=False)).backward()
    return [variable.value.grad.detach().cpu().numpy() for variable in model.trainable_variables]


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
        path = (
            "cuDNN"
            if "ran on cuDNN" in outcomes
            else "fused loop (no cuDNN)"
            if any(o.startswith("ran") for o in outcomes)
            else "step loop"
        )
        rows.append(
            {
                "layer": layer.name,
                "kernels": ", ".join(f"{kernel}: {outcome}" for kernel, outcome in tried) or "none called",
                "path": path,
            }
        )
    return rows


_warned: set[str] = set()


def warn_if_not_fused(model: keras.Model) -> None:
    """Warn once per reason when a config choice (not the architecture) loses the fused GPU kernel."""
    for name, fused, reason in fused_path_report(model):
        if not fused and "recurrent_dropout" in reason and reason not in _warned:
            _warned.add(reason)
            warnings.warn(
                f"{name}: {reason}: this layer will not use the fused cuDNN kernel on a GPU (slower)", stacklevel=3
            )
