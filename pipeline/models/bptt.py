"""Backpropagation through time by hand, in NumPy: the last part of the lecture, runnable.

A vanilla RNN with the lecture's symbols (`../shared/reference/lecture-rnn-part2.md`, "Backpropagation
Through Time"), one sequence at a time or a batch of them:

  forward    z_int(t) = W_in x(t) + W_hid h(t-1) + b_int,   h(t) = f_int(z_int(t)) = tanh(z_int(t))
             z_out(t) = W_out h(t) + b_out,                  y(t) = f_out(z_out(t)) = softmax(z_out(t))
  loss       Loss = sum over the scored steps t of the cross-entropy of y(t): every step
             (`every_step=True`) or only the last one, T. A sum over t, not a mean: the lecture's
             first warning.
  backward   delta_out(t) = d Loss(t) / d z_out(t) = y(t) - target(t)          (softmax with cross-entropy)
             delta_int(t) = d Loss / d h(t)
                          = W_hid^T [delta_int(t+1) * f_int'(z_int(t+1))] + W_out^T delta_out(t)
             (the lecture's recursion: the error arriving from the next step through W_hid, plus the
             error of this step's output through W_out; delta_int(T+1) = 0)
  gradients  d Loss / d W_out = sum_t delta_out(t) h(t)^T
             d Loss / d W_in  = sum_t [delta_int(t) * f_int'(z_int(t))] x(t)^T
             d Loss / d W_hid = sum_t [delta_int(t) * f_int'(z_int(t))] h(t-1)^T
             (the lecture writes the update w = w + mu * sum_t ..., with its deltas taken as the
             negative gradient; here they are gradients, and descent is w = w - mu * gradient)

The lecture leaves out the biases; they are weights on a constant input 1, so their gradients are the
same sums without the x(t) or h(t) factor. With them the model is exactly Keras' SimpleRNN(tanh)
followed by a Dense softmax, which is how the tests check every gradient here against autodiff.

Truncated BPTT (`truncation=k`): the error of the loss at step t flows back at most k steps
(to h(t-k+1)); older steps get nothing from it. k >= T is full BPTT.

`delta_norms` returns |d Loss / d h(t)| for every t: how the gradient vanishes or explodes with the
distance from the loss (notebooks/04-bptt.ipynb). No autodiff anywhere in this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RNNWeights:
    """W_in (H, C), W_hid (H, H), b_int (H,), W_out (K, H), b_out (K,): H hidden units, C input channels, K classes."""

    W_in: np.ndarray
    W_hid: np.ndarray
    b_int: np.ndarray
    W_out: np.ndarray
    b_out: np.ndarray

    @classmethod
    def random(
        cls, channels: int, hidden: int, classes: int, seed: int = 0, spectral_radius: float | None = None
    ) -> RNNWeights:
        """Glorot-like random weights; `spectral_radius` rescales W_hid so that its largest |eigenvalue| is that value."""
        rng = np.random.default_rng(seed)
        W_hid = rng.normal(0, 1 / np.sqrt(hidden), (hidden, hidden))
        if spectral_radius is not None:
            W_hid *= spectral_radius / np.max(np.abs(np.linalg.eigvals(W_hid)))
        return cls(
            W_in=rng.normal(0, 1 / np.sqrt(channels), (hidden, channels)),
            W_hid=W_hid,
            b_int=rng.normal(0, 0.1, hidden),
            W_out=rng.normal(0, 1 / np.sqrt(hidden), (classes, hidden)),
            b_out=rng.normal(0, 0.1, classes),
        )

    def names(self) -> tuple[str, ...]:
        return ("W_in", "W_hid", "b_int", "W_out", "b_out")


@dataclass
class Forward:
    """What the backward pass needs from the forward pass, for a batch of B sequences of T steps."""

    z_int: np.ndarray  # (B, T, H) pre-activations of the hidden units
    h: np.ndarray  # (B, T + 1, H) hidden states; h[:, 0] is h(0) = 0, h[:, t] is h(t)
    y: np.ndarray  # (B, T, K) output probabilities at every step


def softmax(z: np.ndarray) -> np.ndarray:
    shifted = np.exp(z - z.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def f_int_derivative(z: np.ndarray) -> np.ndarray:
    """tanh'(z) = 1 - tanh(z)^2: at most 1, and near 0 where a unit saturates."""
    return 1.0 - np.tanh(z) ** 2


def forward(weights: RNNWeights, x: np.ndarray) -> Forward:
    """The lecture's forward pass over x (B, T, C), from h(0) = 0."""
    batch, steps, _channels = x.shape
    hidden = weights.W_hid.shape[0]
    z_int = np.zeros((batch, steps, hidden))
    h = np.zeros((batch, steps + 1, hidden))
    for t in range(steps):
        z_int[:, t] = x[:, t] @ weights.W_in.T + h[:, t] @ weights.W_hid.T + weights.b_int
        h[:, t + 1] = np.tanh(z_int[:, t])
    y = softmax(h[:, 1:] @ weights.W_out.T + weights.b_out)
    return Forward(z_int, h, y)


def scored_steps(steps: int, every_step: bool) -> np.ndarray:
    """Which steps the loss reads: all of them, or only the last."""
    return np.arange(steps) if every_step else np.array([steps - 1])


def loss(weights: RNNWeights, x: np.ndarray, targets: np.ndarray, every_step: bool = False) -> float:
    """Summed cross-entropy; `targets` holds class indices, (B,) for the last step or (B, T) for every step."""
    y = forward(weights, x).y
    steps = scored_steps(x.shape[1], every_step)
    labels = targets if every_step else targets[:, None]
    chosen = np.take_along_axis(y[:, steps], labels[..., None], axis=-1)
    return float(-np.log(chosen).sum())


def output_deltas(y: np.ndarray, targets: np.ndarray, every_step: bool) -> np.ndarray:
    """delta_out(t) = y(t) - target(t) at the scored steps, 0 elsewhere: (B, T, K)."""
    delta_out = np.zeros_like(y)
    steps = scored_steps(y.shape[1], every_step)
    one_hot = np.eye(y.shape[-1])[targets if every_step else targets[:, None]]
    delta_out[:, steps] = y[:, steps] - one_hot
    return delta_out


def hidden_delta(
    weights: RNNWeights, delta_next: np.ndarray, z_next: np.ndarray, delta_out_t: np.ndarray
) -> np.ndarray:
    """delta_int(t) = W_hid^T [delta_int(t+1) * f_int'(z_int(t+1))] + W_out^T delta_out(t), for a batch."""
    from_next_step = (delta_next * f_int_derivative(z_next)) @ weights.W_hid
    from_this_output = delta_out_t @ weights.W_out
    return from_next_step + from_this_output


def hidden_deltas(
    weights: RNNWeights, state: Forward, delta_out: np.ndarray, truncation: int | None = None
) -> np.ndarray:
    """delta_int(t) = d Loss / d h(t) for every t, (B, T, H); truncated to `truncation` steps per loss term."""
    batch, steps, hidden = state.z_int.shape
    if truncation is None or truncation >= steps:
        delta_int = np.zeros((batch, steps, hidden))
        delta_next, z_next = np.zeros((batch, hidden)), np.zeros((batch, hidden))
        for t in reversed(range(steps)):
            delta_int[:, t] = hidden_delta(weights, delta_next, z_next, delta_out[:, t])
            delta_next, z_next = delta_int[:, t], state.z_int[:, t]
        return delta_int
    if truncation < 1:
        raise ValueError(f"truncation must be >= 1 step, got {truncation}")
    # Truncated: each scored step s sends its own error back through at most `truncation` steps.
    delta_int = np.zeros((batch, steps, hidden))
    no_output = np.zeros_like(delta_out[:, 0])
    for s in range(steps):
        if not delta_out[:, s].any():
            continue
        carried = hidden_delta(weights, np.zeros((batch, hidden)), np.zeros((batch, hidden)), delta_out[:, s])
        delta_int[:, s] += carried
        for t in range(s - 1, max(s - truncation, -1), -1):  # steps s-1 .. s-truncation+1
            carried = hidden_delta(weights, carried, state.z_int[:, t + 1], no_output)
            delta_int[:, t] += carried
    return delta_int


def gradients(
    weights: RNNWeights, x: np.ndarray, targets: np.ndarray, every_step: bool = False, truncation: int | None = None
) -> dict[str, np.ndarray]:
    """d Loss / d each weight, by the lecture's sums over t (see the module's docstring)."""
    state = forward(weights, x)
    delta_out = output_deltas(state.y, targets, every_step)
    delta_int = hidden_deltas(weights, state, delta_out, truncation)
    local = delta_int * f_int_derivative(state.z_int)  # delta_int(t) * f_int'(z_int(t)): (B, T, H)
    h_t, h_previous = state.h[:, 1:], state.h[:, :-1]
    return {
        "W_in": np.einsum("bth,btc->hc", local, x),
        "W_hid": np.einsum("bth,btj->hj", local, h_previous),
        "b_int": local.sum((0, 1)),
        "W_out": np.einsum("btk,bth->kh", delta_out, h_t),
        "b_out": delta_out.sum((0, 1)),
    }


def delta_norms(weights: RNNWeights, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """|d Loss / d h(t)| for t = 1..T with the loss at the last step, averaged over the batch: (T,).
    Read right to left, it is the gradient's size at growing distance from the loss."""
    state = forward(weights, x)
    delta_int = hidden_deltas(weights, state, output_deltas(state.y, targets, every_step=False))
    return np.linalg.norm(delta_int, axis=-1).mean(0)


def finite_difference(
    weights: RNNWeights,
    x: np.ndarray,
    targets: np.ndarray,
    name: str,
    index: tuple[int, ...],
    every_step: bool = False,
    step: float = 1e-6,
) -> float:
    """The central difference (Loss(w + e) - Loss(w - e)) / 2e of one weight: a check that needs no calculus."""
    array = getattr(weights, name)
    original = array[index]
    array[index] = original + step
    above = loss(weights, x, targets, every_step)
    array[index] = original - step
    below = loss(weights, x, targets, every_step)
    array[index] = original
    return (above - below) / (2 * step)


def sgd_step(weights: RNNWeights, grads: dict[str, np.ndarray], learning_rate: float) -> None:
    """w = w - mu * d Loss / d w: the lecture's update, in the descent direction."""
    for name in weights.names():
        getattr(weights, name)[...] -= learning_rate * grads[name]
