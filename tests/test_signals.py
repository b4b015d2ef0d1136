"""Pure signal functions on synthetic signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data import signals

RATE = 50.0


def sine(frequency: float, seconds: float = 60.0, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return amplitude * np.sin(2 * np.pi * frequency * t)


def test_median_filter_removes_an_isolated_spike():
    x = np.zeros((50, 2))
    x[20, 0] = 100.0
    filtered = signals.median_filter(x, 3)
    assert np.abs(filtered).max() == 0.0
    with pytest.raises(ValueError):
        signals.median_filter(x, 4)


def test_lowpass_keeps_low_and_removes_high_frequencies():
    slow, fast = sine(2.0), sine(24.0)
    filtered = signals.lowpass(np.column_stack([slow + fast]), 20.0, RATE, order=3)[:, 0]
    middle = slice(500, -500)  # away from the edges of the forward-backward filter
    assert np.abs(filtered[middle] - slow[middle]).max() < 0.25
    # 24 Hz lies past the 20 Hz corner: what is left of it is small.
    assert np.std(filtered[middle] - slow[middle]) < 0.15 * np.std(fast)


def test_gravity_split_separates_a_0_1_hz_and_5_hz_mixture():
    gravity_true, body_true = 1.0 + sine(0.1, seconds=120), 0.5 * sine(5.0, seconds=120)
    total = np.column_stack([gravity_true + body_true] * 3)
    gravity, body = signals.split_gravity(total, RATE, 0.3)
    middle = slice(1500, -1500)
    np.testing.assert_allclose(gravity + body, total, atol=1e-12)
    assert np.abs(gravity[middle, 0] - gravity_true[middle]).max() < 0.05
    assert np.abs(body[middle, 0] - body_true[middle]).max() < 0.05


def test_preprocess_recording_gives_the_nine_uci_channels():
    acc = np.column_stack([1.0 + 0.3 * sine(2.0), np.zeros(3000), np.zeros(3000)])
    gyro = np.column_stack([0.1 * sine(1.0)] * 3)
    out = signals.preprocess_recording(acc, gyro, RATE)
    assert out.shape == (3000, 9)
    np.testing.assert_allclose(out[:, 6:9], out[:, 0:3] + signals.split_gravity(out[:, 6:9], RATE)[0], atol=1e-9)
    # The body part has no DC: gravity (the constant 1 g) went to the gravity channel.
    assert abs(out[500:-500, 0].mean()) < 0.02 and abs(out[500:-500, 6].mean() - 1.0) < 0.02
    with pytest.raises(ValueError):
        signals.preprocess_recording(acc, gyro[:, :2], RATE)


def test_label_runs_and_window_starts():
    assert signals.label_runs(np.array([5, 5, 1, 1, 1, 5])) == [(0, 2, 5), (2, 5, 1), (5, 6, 5)]
    assert signals.label_runs(np.array([])) == []
    assert signals.window_starts(300, 128, 64).tolist() == [0, 64, 128]
    assert signals.window_starts(100, 128, 64).tolist() == []


def test_windows_stay_inside_one_activity():
    labels = np.array([-1] * 50 + [1] * 300 + [4] * 200 + [7] * 60)
    x = np.arange(len(labels), dtype=float)[:, None] * np.ones((1, 3))
    windows = signals.window_recording(x, labels, window=128, overlap=0.5, keep_labels={1, 4, 7})
    assert windows.labels.tolist() == [1, 1, 1, 4, 4]  # 300 samples give 3 windows, 200 give 2, 60 give none
    assert windows.data.shape == (5, 128, 3)
    for data, label in zip(windows.data, windows.labels):
        assert set(labels[data[:, 0].astype(int)]) == {label}
    assert windows.starts.tolist() == [50, 114, 178, 350, 414]


def test_mean_features_are_body_gravity_and_gyro_means():
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(4, 128, 9))
    features = signals.mean_features(windows)
    assert features.shape == (4, 9)
    np.testing.assert_allclose(features[:, 0:3], windows[:, :, 0:3].mean(1))
    np.testing.assert_allclose(features[:, 3:6], windows[:, :, 6:9].mean(1) - windows[:, :, 0:3].mean(1))
    np.testing.assert_allclose(features[:, 6:9], windows[:, :, 3:6].mean(1))


def test_consecutive_series_never_cross_a_group():
    features = np.arange(12, dtype=float)[:, None]
    groups = np.array([0] * 6 + [1] * 3 + [2] * 3)
    series, firsts = signals.consecutive_series(features, groups, length=3, stride=1)
    assert firsts.tolist() == [0, 1, 2, 3, 6, 9]
    assert series[:, :, 0].tolist()[4] == [6, 7, 8]
    series2, firsts2 = signals.consecutive_series(features, groups, length=3, stride=2)
    assert firsts2.tolist() == [0, 2, 6, 9]


def test_gaussian_noise_reaches_its_std_and_is_seeded():
    x = np.zeros((400, 5, 9), dtype=np.float32)
    std = np.linspace(0.1, 2.0, 9)
    noisy = signals.add_noise(x, "gaussian", 0.5, std, seed=1)
    np.testing.assert_allclose(signals.channel_std(noisy), 0.5 * std, rtol=0.05)
    np.testing.assert_array_equal(noisy, signals.add_noise(x, "gaussian", 0.5, std, seed=1))
    assert not np.array_equal(noisy, signals.add_noise(x, "gaussian", 0.5, std, seed=2))
    assert noisy.dtype == np.float32
    np.testing.assert_array_equal(signals.add_noise(x + 1, "gaussian", 0.0, std, seed=1), x + 1)


def test_sensor_fault_profile_adds_bias_spikes_and_dropped_samples():
    x = np.tile(np.arange(200, dtype=float)[None, :, None], (50, 1, 3))
    noisy = signals.add_noise(x, "sensor-faults", 1.0, np.ones(3), seed=0)
    assert noisy.shape == x.shape and np.isfinite(noisy).all()
    error = noisy - x
    assert np.abs(error).max() > 5  # spikes
    repeated = (np.diff(noisy, axis=1) == 0).mean()
    assert repeated > 0.01  # dropped samples hold their last value


def test_noise_rejects_bad_arguments():
    x = np.zeros((2, 5, 9))
    with pytest.raises(ValueError, match="unknown noise profile"):
        signals.add_noise(x, "pink", 0.5, np.ones(9), seed=0)
    with pytest.raises(ValueError, match="channel_std"):
        signals.add_noise(x, "gaussian", 0.5, np.ones(3), seed=0)


def test_the_noise_level_estimator_recovers_white_noise_levels_on_smooth_series():
    """Smooth series (sines of 0.5-3 cycles per window, channels of very different scales): each
    series' estimated level is within 0.15 x (1 + level) of the level it was noised at, and clean ones read 0."""
    rng = np.random.default_rng(0)
    time = np.linspace(0, 1, 128)[None, :, None]

    def smooth(n: int) -> np.ndarray:
        frequency, phase = rng.uniform(0.5, 3, size=(n, 1, 3)), rng.uniform(0, 2 * np.pi, size=(n, 1, 3))
        return np.sin(2 * np.pi * frequency * time + phase) * np.array([1.0, 3.0, 0.2])

    clean = smooth(400)
    unit = signals.channel_std(clean)
    estimator = signals.NoiseLevelEstimator.fit(clean, unit)
    fresh = smooth(300)
    assert estimator.levels(fresh).max() < 0.01
    for level in (0.25, 0.5, 1.0):
        estimated = estimator.levels(signals.add_noise(fresh, "gaussian", level, unit, seed=3))
        assert abs(estimated.mean() - level) < 0.01 * (1 + level)
        assert np.abs(estimated - level).max() < 0.2 * level
    with pytest.raises(ValueError, match="at least 3 steps, not 2"):
        estimator.levels(fresh[:, :2])
