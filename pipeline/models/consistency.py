"""Noise-consistency training (`regularization.consistency`): every training batch seen clean and
noised, the classification loss on both views and a Jensen-Shannon consistency term between them.

AugMix (Hendrycks et al. 2020) trains with a Jensen-Shannon divergence between the predictions on a
clean image and on its corrupted views; Rusak et al. (2020) show that training against Gaussian
noise at a tuned level is the strongest simple defence against Gaussian corruption. Here the
corruption is the test's own kind: white Gaussian noise, at a level drawn per series from
`regularization.consistency_noise` (x each feature's training std, the unit of the test noise).

- `NoisedTwin`, right after the input's normalization: in training the batch comes out twice, clean
  then noised (2B series); at inference it passes the batch through untouched.
- `ConsistencyModel`, the functional model around it: in training its loss is the compiled loss on
  both halves (the labels repeated) plus `weight` x JS(clean, noised); its metrics read the clean
  half. Validation, prediction, saving and export see the plain model (B in, B out), so a run with
  the switch on exports and predicts like any other.
"""

from __future__ import annotations

from typing import Any

from pipeline.runtime import import_keras

import_keras()  # on the TensorFlow backend, TensorFlow first, without its start-up noise

import keras
from keras import layers, ops

from pipeline.models.augment import PACKAGE

TWIN = "noised_twin"  # the layer's name: the model finds its weight there
EPSILON = 1e-7


@keras.saving.register_keras_serializable(package=PACKAGE)
class NoisedTwin(layers.Layer):
    """Training: the batch, then the batch plus Gaussian noise at a level drawn per series from
    [low, high] (in the input's units), stacked along the batch; inference: the batch as is.
    `weight`: the consistency term's weight, read by ConsistencyModel."""

    def __init__(self, low: float, high: float, weight: float, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.low, self.high, self.weight, self.seed = low, high, weight, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training:
            return inputs
        shape = ops.shape(inputs)
        level = keras.random.uniform(
            (shape[0], 1, 1), self.low, self.high, seed=self.seed_generator, dtype=inputs.dtype
        )
        noise = keras.random.normal(shape, seed=self.seed_generator, dtype=inputs.dtype)
        return ops.concatenate([inputs, inputs + level * noise], axis=0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "low": self.low, "high": self.high, "weight": self.weight, "seed": self.seed}


def jensen_shannon(first: Any, second: Any) -> Any:
    """Mean over the batch of JS(first, second), two batches of class probabilities."""
    first, second = ops.clip(first, EPSILON, 1.0), ops.clip(second, EPSILON, 1.0)
    middle = (first + second) / 2

    def kl(p: Any, q: Any) -> Any:
        return ops.sum(p * (ops.log(p) - ops.log(q)), axis=-1)

    return ops.mean((kl(first, middle) + kl(second, middle)) / 2)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConsistencyModel(keras.Model):
    """A functional model with a NoisedTwin layer, trained on both views with the consistency term."""

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        if not training:  # validation and evaluation: one view, the plain loss
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        count = ops.shape(y)[0]
        clean, noised = y_pred[:count], y_pred[count:]
        both = super().compute_loss(
            x,
            ops.concatenate([y, y], axis=0),
            y_pred,
            None if sample_weight is None else ops.concatenate([sample_weight, sample_weight], axis=0),
            training=training,
        )
        weight = self.get_layer(TWIN).weight
        return both + weight * jensen_shannon(ops.cast(clean, "float32"), ops.cast(noised, "float32"))

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        # training: the clean half (the first B rows); validation: B rows, all of them
        return super().compute_metrics(x, y, y_pred[: ops.shape(y)[0]], sample_weight)
