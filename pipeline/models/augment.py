"""Noise augmentation: Keras layers that act only in training, and the course's noised copies.

The test series are very noisy and the training series are not, so the model must see noisy
versions of its training data. Each layer below draws fresh, seeded randomness every batch and
returns its input unchanged at inference (`training=False`), so a saved model needs no changes.

All layers but `TripletRotation` sit after the normalization layer, so their strengths are in
units of each channel's training std, the unit of the test noise. `TripletRotation` acts on the
raw physical vectors (each accelerometer and gyroscope x, y, z triplet), before normalization.
"""

from __future__ import annotations

from typing import Any

from pipeline.runtime import import_keras

import_keras()  # on the TensorFlow backend, TensorFlow first, without its start-up noise

import keras
import numpy as np
from keras import layers, ops
from scipy.interpolate import CubicSpline

from pipeline.config import AugmentConfig
from pipeline.data.signals import add_noise

PACKAGE = "har"


class Augmentation(layers.Layer):
    """Base: a seeded random transform applied only when `training` is true."""

    def __init__(self, strength: float, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if strength < 0:
            raise ValueError(f"{type(self).__name__}: strength must be >= 0, got {strength}")
        self.strength = strength
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or self.strength == 0:
            return inputs
        return self.augment(inputs)

    def augment(self, inputs: Any) -> Any:
        raise NotImplementedError

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "strength": self.strength, "seed": self.seed}


def smooth_basis(steps: int, knots: int) -> np.ndarray:
    """(steps, knots) matrix: a cubic spline through `knots` values, evaluated at every time step."""
    knots = max(2, min(knots, steps))
    positions = np.linspace(0, steps - 1, knots)
    return CubicSpline(positions, np.eye(knots), bc_type="natural")(np.arange(steps)).astype(np.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Jitter(Augmentation):
    """Additive Gaussian noise with std `strength`."""

    def augment(self, inputs: Any) -> Any:
        return inputs + self.strength * keras.random.normal(
            ops.shape(inputs), seed=self.seed_generator, dtype=inputs.dtype
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class Scaling(Augmentation):
    """Each channel of each series multiplied by one factor ~ N(1, strength)."""

    def augment(self, inputs: Any) -> Any:
        shape = ops.shape(inputs)
        factors = 1.0 + self.strength * keras.random.normal(
            (shape[0], 1, shape[2]), seed=self.seed_generator, dtype=inputs.dtype
        )
        return inputs * factors


class SmoothAugmentation(Augmentation):
    """Base of the warps: random values at `knots` points, joined by a cubic spline over time."""

    def __init__(self, strength: float, knots: int = 4, seed: int | None = None, **kwargs: Any):
        super().__init__(strength, seed, **kwargs)
        self.knots = knots

    def build(self, input_shape: tuple) -> None:
        self.steps = input_shape[1]
        self.basis = ops.convert_to_tensor(smooth_basis(self.steps, self.knots))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "knots": self.knots}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MagnitudeWarp(SmoothAugmentation):
    """Each channel multiplied by a smooth random curve through `knots` values ~ N(1, strength)."""

    def augment(self, inputs: Any) -> Any:
        shape = ops.shape(inputs)
        values = keras.random.normal((shape[0], self.basis.shape[1], shape[2]), seed=self.seed_generator)
        curve = 1.0 + self.strength * ops.einsum("tk,bkc->btc", self.basis, values)
        return inputs * ops.cast(curve, inputs.dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TimeWarp(SmoothAugmentation):
    """Smoothly speeds up and slows down time (speed ~ N(1, strength) at `knots` points); keeps the length."""

    def augment(self, inputs: Any) -> Any:
        if self.steps < 2:
            return inputs
        batch = ops.shape(inputs)[0]
        knots = keras.random.normal((batch, self.basis.shape[1]), seed=self.seed_generator)
        speed = ops.maximum(1.0 + self.strength * ops.matmul(knots, ops.transpose(self.basis)), 0.1)
        elapsed = ops.cumsum(speed, axis=1)
        elapsed = elapsed - elapsed[:, :1]
        position = elapsed / ops.maximum(elapsed[:, -1:], 1e-6) * (self.steps - 1)  # first and last samples stay put
        lower = ops.clip(ops.floor(position), 0, self.steps - 1)
        upper = ops.minimum(lower + 1, self.steps - 1)
        fraction = ops.expand_dims(ops.cast(position - lower, inputs.dtype), -1)

        def gather(index):
            return ops.take_along_axis(
                inputs, ops.expand_dims(ops.cast(index, "int32"), -1) * ops.ones_like(inputs, dtype="int32"), axis=1
            )

        return gather(lower) * (1 - fraction) + gather(upper) * fraction


@keras.saving.register_keras_serializable(package=PACKAGE)
class TripletRotation(Augmentation):
    """One random 3-D rotation per series (angle up to `strength` degrees about a random axis),
    applied to every consecutive x, y, z channel triplet: the phone held another way."""

    def build(self, input_shape: tuple) -> None:
        if input_shape[-1] % 3:
            raise ValueError(f"rotation needs channels in x, y, z triplets; got {input_shape[-1]} channels")

    def augment(self, inputs: Any) -> Any:
        batch = ops.shape(inputs)[0]
        axis = keras.random.normal((batch, 3), seed=self.seed_generator)
        axis = axis / ops.maximum(ops.norm(axis, axis=-1, keepdims=True), 1e-6)
        angle = keras.random.uniform((batch, 1, 1), -1.0, 1.0, seed=self.seed_generator) * (
            self.strength * np.pi / 180.0
        )
        x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
        zero = ops.zeros_like(x)
        cross = ops.reshape(ops.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1), (-1, 3, 3))
        rotation = ops.eye(3) + ops.sin(angle) * cross + (1 - ops.cos(angle)) * ops.matmul(cross, cross)  # Rodrigues
        shape = ops.shape(inputs)
        triplets = ops.reshape(inputs, (shape[0], shape[1], shape[2] // 3, 3))
        rotated = ops.einsum("btgj,bij->btgi", triplets, ops.cast(rotation, inputs.dtype))
        return ops.reshape(rotated, shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SegmentPermutation(Augmentation):
    """Cuts each series into `strength` equal segments and shuffles their order (the tail stays last)."""

    def build(self, input_shape: tuple) -> None:
        segments = int(self.strength)
        steps = input_shape[1]
        self.segments = max(1, min(segments, steps))
        self.segment_length = steps // self.segments
        covered = self.segments * self.segment_length
        self.segment_of_step = ops.convert_to_tensor(np.arange(covered) // self.segment_length, "int32")
        self.offset_of_step = ops.convert_to_tensor(np.arange(covered) % self.segment_length, "int32")
        self.tail = ops.convert_to_tensor(np.arange(covered, steps), "int32")

    def augment(self, inputs: Any) -> Any:
        if self.segments < 2:
            return inputs
        batch = ops.shape(inputs)[0]
        order = ops.argsort(keras.random.uniform((batch, self.segments), seed=self.seed_generator), axis=-1)
        source = ops.take(order, self.segment_of_step, axis=1) * self.segment_length + self.offset_of_step
        source = ops.concatenate([source, ops.broadcast_to(self.tail, (batch, self.tail.shape[0]))], axis=1)
        index = ops.expand_dims(ops.cast(source, "int32"), -1) * ops.ones_like(inputs, dtype="int32")
        return ops.take_along_axis(inputs, index, axis=1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelDropout(Augmentation):
    """Each channel of each series set to 0 (the training mean, after normalization) with probability `strength`."""

    def augment(self, inputs: Any) -> Any:
        shape = ops.shape(inputs)
        keep = keras.random.uniform((shape[0], 1, shape[2]), seed=self.seed_generator) >= self.strength
        return inputs * ops.cast(keep, inputs.dtype)


def raw_augmentations(augment: AugmentConfig, seed: int) -> list[layers.Layer]:
    """Layers that act on physical units, before normalization."""
    return (
        [TripletRotation(augment.rotation_degrees, seed=seed, name="augment_rotation")]
        if augment.rotation_degrees > 0
        else []
    )


def normalized_augmentations(augment: AugmentConfig, seed: int) -> list[layers.Layer]:
    """Layers that act on normalized series, in a fixed order: warps first, additive noise last."""
    chosen: list[layers.Layer] = []
    if augment.time_warp > 0:
        chosen.append(TimeWarp(augment.time_warp, augment.warp_knots, seed=seed + 1, name="augment_time_warp"))
    if augment.permutation_segments > 1:
        chosen.append(SegmentPermutation(augment.permutation_segments, seed=seed + 2, name="augment_permutation"))
    if augment.magnitude_warp > 0:
        chosen.append(
            MagnitudeWarp(augment.magnitude_warp, augment.warp_knots, seed=seed + 3, name="augment_magnitude_warp")
        )
    if augment.scaling > 0:
        chosen.append(Scaling(augment.scaling, seed=seed + 4, name="augment_scaling"))
    if augment.channel_dropout > 0:
        chosen.append(ChannelDropout(augment.channel_dropout, seed=seed + 5, name="augment_channel_dropout"))
    if augment.jitter > 0:
        chosen.append(Jitter(augment.jitter, seed=seed + 6, name="augment_jitter"))
    return chosen


def noised_copies(
    series: np.ndarray, labels: np.ndarray, copies: int, level: float, profile: str, channel_std: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The course's recipe: the training set plus `copies` noised copies of it (noise fixed once, unlike jitter)."""
    if copies <= 0:
        return series, labels
    noisy = [add_noise(series, profile, level, channel_std, seed + 100 + copy) for copy in range(copies)]
    return np.concatenate([series, *noisy]), np.concatenate([labels] * (copies + 1))
