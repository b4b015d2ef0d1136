"""Pure signal code: UCI HAR filtering, the gravity/body split, windowing, mean features, noise.

Every function takes and returns NumPy arrays shaped (time, channels) or
(windows, time, channels); nothing here reads or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal as scipy_signal

from pipeline.errors import ConfigError

# The 9 "Inertial Signals" channels of UCI HAR, in its order.
RAW_CHANNELS = (
    "body_acc_x", "body_acc_y", "body_acc_z",
    "body_gyro_x", "body_gyro_y", "body_gyro_z",
    "total_acc_x", "total_acc_y", "total_acc_z",
)  # fmt: skip
# The 9 mean features of the classroom competition, named as in UCI HAR's 561-feature set.
MEAN_FEATURES = (
    "tBodyAcc-mean()-X", "tBodyAcc-mean()-Y", "tBodyAcc-mean()-Z",
    "tGravityAcc-mean()-X", "tGravityAcc-mean()-Y", "tGravityAcc-mean()-Z",
    "tBodyGyro-mean()-X", "tBodyGyro-mean()-Y", "tBodyGyro-mean()-Z",
)  # fmt: skip


def gravity_channels(channels: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """Indices of the x, y, z channels whose window mean is the gravity direction: the total
    acceleration of the raw windows, or the classroom's gravity means; () where none are named."""
    for names in (RAW_CHANNELS[6:9], MEAN_FEATURES[3:6]):
        if all(name in channels for name in names):
            return tuple(list(channels).index(name) for name in names)
    return ()


ACTIVITY_NAMES = {
    1: "WALKING", 2: "WALKING_UPSTAIRS", 3: "WALKING_DOWNSTAIRS", 4: "SITTING", 5: "STANDING", 6: "LAYING",
    7: "STAND_TO_SIT", 8: "SIT_TO_STAND", 9: "SIT_TO_LIE", 10: "LIE_TO_SIT", 11: "STAND_TO_LIE", 12: "LIE_TO_STAND",
}  # fmt: skip


def median_filter(x: np.ndarray, kernel: int) -> np.ndarray:
    """Median filter along time, per channel (removes isolated spikes). `x` is (time, channels)."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"median kernel must be odd and positive, got {kernel}")
    if kernel == 1:
        return x.copy()
    return np.column_stack([scipy_signal.medfilt(x[:, c], kernel) for c in range(x.shape[1])])


def lowpass(x: np.ndarray, cutoff_hz: float, sample_rate_hz: float, order: int = 3) -> np.ndarray:
    """Zero-phase Butterworth low-pass along time (forward-backward, so no delay is introduced)."""
    if not 0 < cutoff_hz < sample_rate_hz / 2:
        raise ValueError(f"cutoff {cutoff_hz} Hz must be in (0, {sample_rate_hz / 2}) Hz")
    sos = scipy_signal.butter(order, cutoff_hz, btype="low", fs=sample_rate_hz, output="sos")
    return scipy_signal.sosfiltfilt(sos, x, axis=0)


def split_gravity(
    total_acc: np.ndarray, sample_rate_hz: float, cutoff_hz: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """(gravity, body): gravity is the part below `cutoff_hz`, body is the rest (they sum to the input)."""
    gravity = lowpass(total_acc, cutoff_hz, sample_rate_hz, order=3)
    return gravity, total_acc - gravity


def preprocess_recording(
    acc: np.ndarray,
    gyro: np.ndarray,
    sample_rate_hz: float = 50.0,
    median_kernel: int = 3,
    lowpass_hz: float = 20.0,
    lowpass_order: int = 3,
    gravity_hz: float = 0.3,
) -> np.ndarray:
    """UCI HAR preprocessing of one recording: (time, 3) acc in g and gyro in rad/s -> (time, 9) RAW_CHANNELS."""
    if acc.shape != gyro.shape or acc.ndim != 2 or acc.shape[1] != 3:
        raise ValueError(f"acc and gyro must both be (time, 3), got {acc.shape} and {gyro.shape}")
    cleaned = lowpass(median_filter(np.hstack([acc, gyro]), median_kernel), lowpass_hz, sample_rate_hz, lowpass_order)
    total_acc, body_gyro = cleaned[:, :3], cleaned[:, 3:]
    _gravity, body_acc = split_gravity(total_acc, sample_rate_hz, gravity_hz)
    return np.hstack([body_acc, body_gyro, total_acc])


def label_runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal runs of one label: [(start, stop, label), ...] with stop exclusive."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [labels.size]])
    return [(int(a), int(b), int(labels[a])) for a, b in zip(starts, stops)]


def window_starts(length: int, window: int, step: int) -> np.ndarray:
    """Start indices of every full window of `window` samples, `step` apart, inside `length` samples."""
    if window < 1 or step < 1:
        raise ValueError("window and step must be positive")
    if length < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, length - window + 1, step, dtype=np.int64)


def window_step(window: int, overlap: float) -> int:
    """Samples between window starts (UCI HAR: 128 samples at 50% overlap -> 64)."""
    return max(1, int(round(window * (1 - overlap))))


@dataclass(frozen=True)
class Windows:
    """Windows cut from one recording: data (n, window, channels), their label, start sample and run index."""

    data: np.ndarray
    labels: np.ndarray
    starts: np.ndarray
    runs: np.ndarray


def window_recording(
    signals: np.ndarray, labels: np.ndarray, window: int, overlap: float, keep_labels: set[int]
) -> Windows:
    """Cut windows that lie entirely inside one run of a kept label (UCI HAR: within one activity)."""
    step = window_step(window, overlap)
    parts, window_labels, starts, runs = [], [], [], []
    for run_index, (start, stop, label) in enumerate(label_runs(labels)):
        if label not in keep_labels:
            continue
        for offset in window_starts(stop - start, window, step):
            parts.append(signals[start + offset : start + offset + window])
            window_labels.append(label)
            starts.append(start + offset)
            runs.append(run_index)
    channels = signals.shape[1]
    data = np.stack(parts) if parts else np.zeros((0, window, channels), signals.dtype)
    return Windows(data, np.array(window_labels, np.int64), np.array(starts, np.int64), np.array(runs, np.int64))


def mean_features(windows: np.ndarray) -> np.ndarray:
    """(n, window, RAW_CHANNELS) -> (n, MEAN_FEATURES): body acc, gravity acc and body gyro means per window."""
    means = windows.mean(axis=1)
    body_acc, body_gyro, total_acc = means[:, 0:3], means[:, 3:6], means[:, 6:9]
    return np.hstack([body_acc, total_acc - body_acc, body_gyro])


def consecutive_series(
    features: np.ndarray, groups: np.ndarray, length: int, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Series of `length` consecutive rows that share one group (same recording and activity run).

    Returns (series (m, length, features), index of each series' first row).
    """
    firsts = []
    for start, stop, _group in label_runs(groups):
        firsts.extend(start + window_starts(stop - start, length, stride))
    firsts_array = np.array(firsts, dtype=np.int64)
    if firsts_array.size == 0:
        return np.zeros((0, length, features.shape[1]), features.dtype), firsts_array
    index = firsts_array[:, None] + np.arange(length)[None, :]
    return features[index], firsts_array


# ---- noise ---------------------------------------------------------------------------------
# A noise profile maps clean series (n, time, channels), a level, the clean-train std per channel
# and a seeded generator to noisy series of the same shape. Levels are in units of that std.


def gaussian_noise(x: np.ndarray, level: float, channel_std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise with std `level` x each channel's clean-train std (the competition's)."""
    return x + rng.normal(size=x.shape) * (level * channel_std)


def sensor_fault_noise(x: np.ndarray, level: float, channel_std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise plus what real phones do: a constant bias, a slow linear drift, rare spikes,
    and dropped samples held at their last value. Every part scales with `level`."""
    n, time, channels = x.shape
    noisy = gaussian_noise(x, level, channel_std, rng)
    scale = level * channel_std
    noisy += rng.normal(size=(n, 1, channels)) * 0.5 * scale  # per-series calibration bias
    ramp = np.linspace(0.0, 1.0, time)[None, :, None]
    noisy += ramp * rng.normal(size=(n, 1, channels)) * 0.5 * scale  # drift over the series
    spikes = rng.random(size=x.shape) < min(0.02, 0.02 * level)
    noisy += spikes * rng.normal(size=x.shape) * 5.0 * scale  # rare large spikes
    if time > 1:
        dropped = rng.random(size=(n, time)) < min(0.05, 0.05 * level)
        dropped[:, 0] = False  # the first sample has nothing to hold
        index = np.where(dropped, 0, np.arange(time)[None, :])
        index = np.maximum.accumulate(index, axis=1)  # each dropped sample repeats the last kept one
        noisy = np.take_along_axis(noisy, index[:, :, None], axis=1)
    return noisy


NOISE_PROFILES = {"gaussian": gaussian_noise, "sensor-faults": sensor_fault_noise}


def add_noise(x: np.ndarray, profile: str, level: float, channel_std: np.ndarray, seed: int) -> np.ndarray:
    """Apply the named noise profile at `level` with a fixed seed; level 0 returns an unchanged copy."""
    if profile not in NOISE_PROFILES:
        raise ConfigError(f"unknown noise profile {profile!r} (known: {', '.join(NOISE_PROFILES)})")
    channel_std = np.asarray(channel_std, dtype=np.float64)
    if channel_std.shape != (x.shape[-1],):
        raise ValueError(f"channel_std must have {x.shape[-1]} values, got shape {channel_std.shape}")
    if level == 0:
        return x.copy()
    noisy = NOISE_PROFILES[profile](x.astype(np.float64), level, channel_std, np.random.default_rng(seed))
    return noisy.astype(x.dtype)


def channel_std(x: np.ndarray) -> np.ndarray:
    """Std of each channel over every series and time step: the unit of every noise level."""
    return x.reshape(-1, x.shape[-1]).std(axis=0)


# ---- the noise level of each series, estimated ---------------------------------------------
# Sensor signals are smooth and the competitions' test noise is white, so a series' second
# differences x[t+1] - 2 x[t] + x[t-1] carry the noise with 6 times its variance, above the
# roughness the clean series have of their own. Measured on the test subjects of the two HAPT
# competitions (docs/evaluation.md, `make noise-level`), it is what a noise-aware blend can weigh
# its members by, and it tells a user how noisy an unlabeled test file is.


def second_difference_power(series: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """(n, channels): each series' mean squared second difference per channel, over 6 unit^2
    (so white noise of std `level` x unit adds level^2)."""
    if series.shape[1] < 3:
        raise ValueError(f"estimating a noise level needs series of at least 3 steps, not {series.shape[1]}")
    second = series[:, 2:, :] - 2 * series[:, 1:-1, :] + series[:, :-2, :]
    return (second.astype(np.float64) ** 2).mean(axis=1) / (6 * np.maximum(unit, 1e-12) ** 2)


@dataclass(frozen=True)
class NoiseLevelEstimator:
    """Each series' white-noise level in units of the clean-train std per channel (the unit of every
    noise level here): sqrt of the weighted mean over channels of its second-difference power above
    the clean series' mean. Channels weigh by the inverse variance of that power over the clean
    series, so the smooth channels (on classroom, the gyroscope's window means) carry the estimate."""

    unit: np.ndarray  # per channel: the clean-train std
    reference: np.ndarray  # per channel: the clean series' mean second-difference power
    weights: np.ndarray  # per channel, summing to 1

    @classmethod
    def fit(cls, clean: np.ndarray, unit: np.ndarray) -> NoiseLevelEstimator:
        power = second_difference_power(clean, unit)
        inverse = 1 / np.maximum(power.var(axis=0), 1e-12)
        return cls(np.asarray(unit, np.float64), power.mean(axis=0), inverse / inverse.sum())

    def levels(self, series: np.ndarray) -> np.ndarray:
        """(n,) the estimated noise level of each series (0 where it is no rougher than the clean ones)."""
        excess = (second_difference_power(series, self.unit) - self.reference) @ self.weights
        return np.sqrt(np.maximum(excess, 0.0))
