"""Backpropagation through time by hand (pipeline.models.bptt) against Keras' autodiff and finite differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.models import bptt
from pipeline.models.diagnostics import weight_gradients

CHANNELS, HIDDEN, CLASSES = 3, 5, 4


def keras_twin(weights: bptt.RNNWeights, steps: int, every_step: bool):
    """The same RNN as a float64 Keras model: SimpleRNN(tanh) then Dense logits (loss from logits, so no clipping)."""
    import keras

    inputs = keras.Input((steps, weights.W_in.shape[1]), dtype="float64")
    hidden = keras.layers.SimpleRNN(
        weights.W_hid.shape[0], activation="tanh", return_sequences=every_step, dtype="float64"
    )(inputs)
    logits = keras.layers.Dense(weights.W_out.shape[0], dtype="float64")(hidden)
    model = keras.Model(inputs, logits)
    # Keras computes x @ kernel: its kernels are the lecture's matrices transposed.
    model.layers[1].set_weights([weights.W_in.T, weights.W_hid.T, weights.b_int])
    model.layers[2].set_weights([weights.W_out.T, weights.b_out])
    return model


def keras_gradients(
    weights: bptt.RNNWeights, x: np.ndarray, targets: np.ndarray, every_step: bool
) -> dict[str, np.ndarray]:
    model = keras_twin(weights, x.shape[1], every_step)
    one_hot = np.eye(weights.W_out.shape[0])[targets]
    kernel, recurrent, bias, out_kernel, out_bias = weight_gradients(model, x, one_hot, from_logits=True)
    return {"W_in": kernel.T, "W_hid": recurrent.T, "b_int": bias, "W_out": out_kernel.T, "b_out": out_bias}


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def random_case(
    steps: int, every_step: bool, seed: int, batch: int = 4
) -> tuple[bptt.RNNWeights, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = bptt.RNNWeights.random(CHANNELS, HIDDEN, CLASSES, seed=seed, spectral_radius=1.2)
    x = rng.normal(size=(batch, steps, CHANNELS))
    targets = rng.integers(0, CLASSES, size=(batch, steps) if every_step else batch)
    return weights, x, targets


@pytest.mark.parametrize("every_step", [False, True])
@pytest.mark.parametrize("steps", [1, 2, 7, 30])
def test_hand_written_bptt_matches_keras_autodiff(steps: int, every_step: bool):
    weights, x, targets = random_case(steps, every_step, seed=steps)
    by_hand = bptt.gradients(weights, x, targets, every_step=every_step)
    by_keras = keras_gradients(weights, x, targets, every_step)
    for name in weights.names():
        assert relative_error(by_hand[name], by_keras[name]) < 1e-6, name


def test_the_loss_matches_keras_summed_cross_entropy():
    import keras

    weights, x, targets = random_case(9, True, seed=3)
    logits = keras_twin(weights, 9, True)(x)
    expected = float(
        keras.ops.sum(keras.losses.categorical_crossentropy(np.eye(CLASSES)[targets], logits, from_logits=True))
    )
    assert bptt.loss(weights, x, targets, every_step=True) == pytest.approx(expected, rel=1e-10)


def test_hand_written_bptt_matches_autodiff_on_real_har_windows(prepared_root: Path):
    """Raw 128 x 9 windows of the prepared competition (standardized), at the real length."""
    from pipeline.data.competition import load_competition

    train = load_competition(prepared_root / "data" / "processed" / "raw").train
    x = train.series[:3].astype(np.float64)
    x = (x - x.mean((0, 1))) / x.std((0, 1))
    targets = train.labels[:3] - 1
    weights = bptt.RNNWeights.random(x.shape[-1], 6, 6, seed=1, spectral_radius=0.9)
    by_hand, by_keras = bptt.gradients(weights, x, targets), keras_gradients(weights, x, targets, every_step=False)
    for name in weights.names():
        assert relative_error(by_hand[name], by_keras[name]) < 1e-6, name


def test_hand_written_bptt_matches_finite_differences_on_a_few_weights():
    weights, x, targets = random_case(6, True, seed=11, batch=2)
    by_hand = bptt.gradients(weights, x, targets, every_step=True)
    for name, index in (
        ("W_in", (1, 2)),
        ("W_hid", (0, 4)),
        ("W_hid", (3, 3)),
        ("b_int", (2,)),
        ("W_out", (3, 1)),
        ("b_out", (0,)),
    ):
        numeric = bptt.finite_difference(weights, x, targets, name, index, every_step=True)
        assert by_hand[name][index] == pytest.approx(numeric, rel=1e-6, abs=1e-8), (name, index)


def test_a_backward_pass_without_the_recurrent_term_fails_the_autodiff_check(monkeypatch):
    """The check can fail: drop the error carried from t+1 through W_hid, and W_in and W_hid go wrong."""

    def without_next_step(weights, delta_next, z_next, delta_out_t):
        return delta_out_t @ weights.W_out

    monkeypatch.setattr(bptt, "hidden_delta", without_next_step)
    weights, x, targets = random_case(7, False, seed=5)
    broken, by_keras = bptt.gradients(weights, x, targets), keras_gradients(weights, x, targets, every_step=False)
    assert relative_error(broken["W_hid"], by_keras["W_hid"]) > 1e-2
    assert relative_error(broken["W_in"], by_keras["W_in"]) > 1e-2
    assert relative_error(broken["W_out"], by_keras["W_out"]) < 1e-6  # the output layer's own term is untouched


def test_a_backward_pass_without_the_tanh_derivative_fails_the_finite_difference_check(monkeypatch):
    monkeypatch.setattr(bptt, "f_int_derivative", lambda z: np.ones_like(z))
    weights, x, targets = random_case(5, True, seed=2, batch=2)
    broken = bptt.gradients(weights, x, targets, every_step=True)
    monkeypatch.undo()
    numeric = bptt.finite_difference(weights, x, targets, "W_hid", (1, 2), every_step=True)
    assert abs(broken["W_hid"][1, 2] - numeric) > 1e-3 * max(abs(numeric), 1e-3)


def test_truncated_bptt_is_autodiff_through_the_last_k_steps_only():
    """For a loss at the last step, BPTT truncated to k steps is the gradient of a forward pass whose
    state h(T-k) is held constant (no gradient flows further back)."""
    import tensorflow as tf

    weights, x, targets = random_case(12, False, seed=7)
    k = 4
    W = {name: tf.Variable(getattr(weights, name)) for name in weights.names()}
    with tf.GradientTape() as tape:
        h = tf.zeros((x.shape[0], HIDDEN), tf.float64)
        for t in range(x.shape[1]):
            if t == x.shape[1] - k:
                h = tf.stop_gradient(h)
            h = tf.tanh(x[:, t] @ tf.transpose(W["W_in"]) + h @ tf.transpose(W["W_hid"]) + W["b_int"])
        logits = h @ tf.transpose(W["W_out"]) + W["b_out"]
        value = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
    expected = dict(zip(W, (g.numpy() for g in tape.gradient(value, list(W.values())))))
    truncated = bptt.gradients(weights, x, targets, truncation=k)
    for name in weights.names():
        assert relative_error(truncated[name], expected[name]) < 1e-6, name
    full = bptt.gradients(weights, x, targets)
    assert relative_error(truncated["W_hid"], full["W_hid"]) > 1e-4  # truncation really cut something
    assert all(
        relative_error(bptt.gradients(weights, x, targets, truncation=12)[n], full[n]) < 1e-12 for n in weights.names()
    )


def test_gradients_vanish_below_spectral_radius_one_and_grow_above_it_in_the_linear_regime():
    """With tiny inputs the tanh units stay near 0 (f' ~ 1), so |d Loss / d h(t)| scales like rho^(T - t)."""
    rng = np.random.default_rng(0)
    x = rng.normal(scale=1e-4, size=(8, 40, CHANNELS))
    targets = rng.integers(0, CLASSES, 8)
    ratios = {}
    for rho in (0.5, 1.5):
        weights = bptt.RNNWeights.random(CHANNELS, 16, CLASSES, seed=4, spectral_radius=rho)
        weights.b_int[:] = 0
        norms = bptt.delta_norms(weights, x, targets)
        ratios[rho] = norms[0] / norms[-1]  # 39 steps from the loss against the last step
    assert ratios[0.5] < 1e-6 and ratios[1.5] > 1e3


def test_a_few_sgd_steps_with_hand_gradients_lower_the_loss():
    weights, x, targets = random_case(10, True, seed=9, batch=16)
    before = bptt.loss(weights, x, targets, every_step=True)
    for _ in range(20):
        bptt.sgd_step(weights, bptt.gradients(weights, x, targets, every_step=True), learning_rate=0.01)
    assert bptt.loss(weights, x, targets, every_step=True) < 0.9 * before


def test_truncation_below_one_step_is_refused():
    weights, x, targets = random_case(5, False, seed=1)
    with pytest.raises(ValueError, match="truncation"):
        bptt.gradients(weights, x, targets, truncation=0)
