"""Augmentation layers: each does what it says in training and nothing at inference."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.models import augment

RNG = np.random.default_rng(0)
SERIES = RNG.normal(size=(64, 40, 9)).astype(np.float32)

LAYERS = {
    "jitter": lambda: augment.Jitter(0.3, seed=1),
    "scaling": lambda: augment.Scaling(0.2, seed=1),
    "magnitude_warp": lambda: augment.MagnitudeWarp(0.2, knots=4, seed=1),
    "time_warp": lambda: augment.TimeWarp(0.3, knots=4, seed=1),
    "rotation": lambda: augment.TripletRotation(90.0, seed=1),
    "permutation": lambda: augment.SegmentPermutation(4, seed=1),
    "channel_dropout": lambda: augment.ChannelDropout(0.3, seed=1),
}


def run(layer, x: np.ndarray, training: bool = True) -> np.ndarray:
    return keras.ops.convert_to_numpy(layer(x, training=training))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_nothing_happens_at_inference_and_training_changes_the_series(name: str):
    layer = LAYERS[name]()
    np.testing.assert_array_equal(run(layer, SERIES, training=False), SERIES)
    augmented = run(layer, SERIES)
    assert augmented.shape == SERIES.shape
    assert not np.allclose(augmented, SERIES)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_seeded_layers_repeat_their_draws(name: str):
    np.testing.assert_array_equal(run(LAYERS[name](), SERIES), run(LAYERS[name](), SERIES))


def test_jitter_reaches_its_std():
    noisy = run(augment.Jitter(0.3, seed=2), np.zeros((200, 40, 9), np.float32))
    assert noisy.std() == pytest.approx(0.3, rel=0.02)


def test_scaling_is_one_gain_per_series_and_channel():
    ones = np.ones((500, 10, 9), np.float32)
    scaled = run(augment.Scaling(0.2, seed=3), ones)
    assert np.allclose(scaled, scaled[:, :1, :])  # constant over time
    assert scaled[:, 0, :].std() == pytest.approx(0.2, rel=0.05)


def test_magnitude_warp_is_a_smooth_gain_around_one():
    ones = np.ones((300, 128, 3), np.float32)
    curve = run(augment.MagnitudeWarp(0.2, knots=4, seed=4), ones)
    assert abs(curve.mean() - 1.0) < 0.02
    assert np.abs(np.diff(curve, axis=1)).max() < 0.1  # smooth: no jumps between samples


def test_time_warp_keeps_length_endpoints_and_order():
    ramp = np.tile(np.linspace(0, 1, 128, dtype=np.float32)[None, :, None], (50, 1, 2))
    warped = run(augment.TimeWarp(0.5, knots=5, seed=5), ramp)
    assert warped.shape == ramp.shape
    np.testing.assert_allclose(warped[:, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(warped[:, -1], 1.0, atol=1e-5)
    assert (np.diff(warped, axis=1) >= -1e-6).all()  # a warp of time never reverses it
    assert np.abs(warped - ramp).max() > 0.01


def test_rotation_keeps_each_triplets_norm_and_is_shared_by_the_triplets():
    rotated = run(augment.TripletRotation(180.0, seed=6), SERIES)

    def norms(x):
        return np.linalg.norm(x.reshape(*x.shape[:2], 3, 3), axis=-1)

    np.testing.assert_allclose(norms(rotated), norms(SERIES), rtol=1e-4, atol=1e-5)

    # The same rotation acts on every triplet of a series: the angle between two triplets is kept.
    def dot(x):
        return (x[..., 0:3] * x[..., 3:6]).sum(-1)

    np.testing.assert_allclose(dot(rotated), dot(SERIES), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="triplets"):
        augment.TripletRotation(10.0)(np.zeros((1, 5, 4), np.float32), training=True)


def test_permutation_reorders_whole_segments():
    steps = np.tile(np.arange(41, dtype=np.float32)[None, :, None], (20, 1, 1))
    permuted = run(augment.SegmentPermutation(4, seed=7), steps)[:, :, 0]
    assert (np.sort(permuted, axis=1) == np.arange(41)).all()  # every step kept once
    assert (permuted[:, 40] == 40).all()  # the tail that fills no segment stays last
    segments = permuted[:, :40].reshape(20, 4, 10)
    assert (np.diff(segments, axis=-1) == 1).all()  # inside a segment, time runs on


def test_channel_dropout_zeroes_whole_channels():
    dropped = run(augment.ChannelDropout(0.3, seed=8), np.ones((400, 10, 9), np.float32))
    per_channel = dropped.max(axis=1)
    assert set(np.unique(dropped)) == {0.0, 1.0}
    assert (dropped.min(axis=1) == per_channel).all()  # a channel is dropped for the whole series
    assert (per_channel == 0).mean() == pytest.approx(0.3, abs=0.03)


def test_noised_copies_add_k_noisy_versions():
    series, labels = SERIES[:10], np.arange(10)
    std = np.full(9, 2.0)
    more, more_labels = augment.noised_copies(
        series, labels, copies=3, level=0.5, profile="gaussian", channel_std=std, seed=0
    )
    assert more.shape == (40, 40, 9) and (more_labels == np.tile(labels, 4)).all()
    np.testing.assert_array_equal(more[:10], series)
    assert (more[10:20] - series).std() == pytest.approx(1.0, rel=0.05)
    same, same_labels = augment.noised_copies(
        series, labels, copies=0, level=0.5, profile="gaussian", channel_std=std, seed=0
    )
    assert same is series and same_labels is labels


def test_augmented_model_saves_and_reloads_with_its_augmentations_active(tmp_path):
    """At inference every augmentation is a no-op, so the reload is checked in training mode: the
    reloaded layers keep their strengths and seeds, and augment exactly as the originals do."""
    from pipeline import models
    from pipeline.config import load_config

    config = load_config(
        None,
        [
            "model.units=8",
            "augment.jitter=0.2",
            "augment.time_warp=0.2",
            "augment.rotation_degrees=20",
            "augment.permutation_segments=2",
            "augment.scaling=0.1",
        ],
    )
    model = models.build_model(config, (16, 9), 3)
    model.save(tmp_path / "m.keras")  # before any call: both seed generators start from the same state
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    names = [layer.name for layer in model.layers if layer.name.startswith("augment_")]
    assert len(names) == 5
    for name in names:
        assert reloaded.get_layer(name).get_config() == model.get_layer(name).get_config()
        original = keras.ops.convert_to_numpy(model.get_layer(name)(SERIES[:8, :16], training=True))
        again = keras.ops.convert_to_numpy(reloaded.get_layer(name)(SERIES[:8, :16], training=True))
        np.testing.assert_allclose(again, original, rtol=1e-5, atol=1e-6)
        assert not np.allclose(again, SERIES[:8, :16])  # it really augments after the reload
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(SERIES[:4, :16])),
        keras.ops.convert_to_numpy(model(SERIES[:4, :16])),
        rtol=1e-5,
    )
