"""`make recording FILE=<path> [RUN=...]`: your own phone recording -> per-window probabilities, a
smoothed activity timeline and a figure, in reports/recordings/<name>/.

One code path from the phone to the model, the same as training's: pipeline.phone.formats reads
the export (Sensor Logger, phyphox or a plain CSV) into acceleration with gravity in g and the
gyroscope in rad/s; each sensor is resampled from its uneven timestamps onto one 50 Hz grid (linear
interpolation onto a grid at a multiple of 50 Hz near the app's rate, then scipy's polyphase
resampler, whose low-pass keeps what lies above 25 Hz from folding back); then the run's own UCI
HAR chain (pipeline.data.signals.preprocess_recording with the data settings the run was trained on),
windows of `data.window` samples at `data.overlap`. A raw run takes the windows; a classroom run
takes `data.series_length` consecutive windows' 9 mean features, and a window's probabilities are
the mean over the series that contain it.

A gap longer than one window (the app paused, the phone slept) splits the recording: each part is
processed alone and the timeline skips the gap. Everything else wrong with a recording is one line
naming the file and the problem, and nothing is written.

Writes `windows.csv` (segment, start_s, end_s, p_<class>..., activity, confidence), `timeline.csv`
(start_s, end_s, activity, confidence), `timeline.png` and `summary.json`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy import signal as scipy_signal

from pipeline.cli import run_stage, stage_parser
from pipeline.config import PREPROCESSING, Config, DataConfig
from pipeline.data.hapt import HAPT_FOLDER
from pipeline.data.signals import (
    ACTIVITY_NAMES,
    MEAN_FEATURES,
    RAW_CHANNELS,
    consecutive_series,
    label_runs,
    mean_features,
    preprocess_recording,
    window_starts,
    window_step,
)
from pipeline.errors import DataError
from pipeline.files import atomic_file, atomic_folder
from pipeline.log import log
from pipeline.phone.formats import PhoneRecording, PlainColumns, Stream, read_recording
from pipeline.runs.folder import RunFolder
from pipeline.runs.registry import finished_run, resolve_runs, run_config


@dataclass(frozen=True)
class Segment:
    """A stretch without gaps, on the run's sample grid: start time (s), (n, 3) acc in g, (n, 3) gyro in rad/s."""

    start_s: float
    acc: np.ndarray
    gyro: np.ndarray


@dataclass(frozen=True)
class Predictor:
    """The models of one or more runs (averaged) and what their inputs are."""

    run_ids: list[str]
    models: list[Any]
    data: DataConfig
    channels: tuple[str, ...]
    classes: list[int]

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """(n, window, RAW_CHANNELS) preprocessed windows of one segment -> (n, classes) probabilities."""
        if self.channels == RAW_CHANNELS:
            inputs, firsts, length = windows.astype(np.float32), np.arange(len(windows)), 1
        else:
            length = self.data.series_length
            inputs, firsts = consecutive_series(
                mean_features(windows).astype(np.float32), np.zeros(len(windows), np.int64), length
            )
        series = np.mean([model.predict(inputs, batch_size=512, verbose=0) for model in self.models], axis=0)
        # each window: the mean over the series that contain it
        total = np.zeros((len(windows), len(self.classes)))
        count = np.zeros(len(windows))
        for offset in range(length):
            np.add.at(total, firsts + offset, series)
            np.add.at(count, firsts + offset, 1)
        return total / count[:, None]

    def min_windows(self) -> int:
        return 1 if self.channels == RAW_CHANNELS else self.data.series_length


def load_predictor(config: Config, run_ids: list[str]) -> Predictor:

    run_ids = resolve_runs(config, run_ids)
    loaded, data, channels, classes = [], None, None, None
    for run_id in run_ids:
        run_dir = finished_run(config, run_id)
        lineage = RunFolder(run_dir).lineage()
        run_data = run_config(config, run_dir).data
        run_channels = tuple(lineage.channels)
        if run_channels not in (RAW_CHANNELS, MEAN_FEATURES):
            raise DataError(
                f"run {run_id} takes channels {', '.join(run_channels)}; a recording gives UCI HAR's 9 raw channels or the classroom's 9 mean features"
            )
        if data is not None and (
            {k: getattr(run_data, k) for k in PREPROCESSING} != {k: getattr(data, k) for k in PREPROCESSING}
            or run_channels != channels
            or lineage.classes != classes
        ):
            raise DataError(
                f"run {run_id} was trained on other inputs or classes than {run_ids[0]}: they cannot be averaged"
            )
        data, channels, classes = run_data, run_channels, lineage.classes
        loaded.append(RunFolder(run_dir).load_model())
    assert data is not None and channels is not None and classes is not None
    return Predictor(run_ids, loaded, data, channels, list(classes))


# ---- from uneven app samples to segments on the run's grid -------------------------------------


def covered(stream: Stream, max_gap_s: float) -> list[tuple[float, float]]:
    """The stretches of a stream without a gap longer than `max_gap_s`."""
    breaks = np.flatnonzero(np.diff(stream.time_s) > max_gap_s)
    starts = np.concatenate([[0], breaks + 1])
    stops = np.concatenate([breaks, [len(stream.time_s) - 1]])
    return [(float(stream.time_s[a]), float(stream.time_s[b])) for a, b in zip(starts, stops)]


def resample(stream: Stream, start_s: float, samples: int, rate_hz: float) -> np.ndarray:
    """The stream on `samples` points from `start_s`, `rate_hz` apart: linear interpolation onto a grid
    at the multiple of `rate_hz` nearest the stream's own rate, then scipy's polyphase decimation (its
    anti-aliasing low-pass included) down to `rate_hz`."""
    native = 1.0 / float(np.median(np.diff(stream.time_s)))
    factor = max(1, int(round(native / rate_hz)))
    grid = start_s + np.arange(samples * factor) / (rate_hz * factor)
    fine = np.column_stack([np.interp(grid, stream.time_s, stream.values[:, i]) for i in range(stream.values.shape[1])])
    if factor == 1:
        return fine
    return scipy_signal.resample_poly(fine, 1, factor, axis=0, padtype="line")[:samples]


def stretches(recording: PhoneRecording, max_gap_s: float) -> list[tuple[float, float]]:
    """(start, stop) of the times both sensors cover without a gap longer than `max_gap_s`."""
    found = []
    for acc_start, acc_stop in covered(recording.acc, max_gap_s):
        for gyro_start, gyro_stop in covered(recording.gyro, max_gap_s):
            start, stop = max(acc_start, gyro_start), min(acc_stop, gyro_stop)
            if stop > start:
                found.append((start, stop))
    return found


def check_long_enough(recording: PhoneRecording, data: DataConfig) -> None:
    """Refuse a recording without one window's worth of samples from both sensors in one stretch."""
    window_s = data.window / data.sample_rate_hz
    if not any(
        stop - start >= (data.window - 1) / data.sample_rate_hz for start, stop in stretches(recording, window_s)
    ):
        duration = max(recording.acc.time_s[-1] - recording.acc.time_s[0], 0)
        raise DataError(
            f"{recording.source}: no stretch of at least one window ({window_s:g} s = {data.window} samples) with both sensors (recording: {duration:.1f} s)"
        )


def segments(recording: PhoneRecording, data: DataConfig) -> tuple[list[Segment], list[str]]:
    """The recording on the run's grid, split at gaps longer than one window; notes say what was split or dropped."""
    check_long_enough(recording, data)
    window_s = data.window / data.sample_rate_hz
    notes = []
    for stream in (recording.acc, recording.gyro):
        gaps = np.flatnonzero(np.diff(stream.time_s) > window_s)
        for before, after in zip(stream.time_s[gaps], stream.time_s[gaps + 1]):
            notes.append(
                f"{stream.origin}: no samples from {before:.1f} s to {after:.1f} s (a gap longer than one window): split there"
            )
    parts = []
    for start, stop in stretches(recording, window_s):
        samples = int(np.floor((stop - start) * data.sample_rate_hz)) + 1
        if samples >= data.window:
            parts.append(
                Segment(
                    start,
                    resample(recording.acc, start, samples, data.sample_rate_hz),
                    resample(recording.gyro, start, samples, data.sample_rate_hz),
                )
            )
        else:
            notes.append(f"{start:.1f} s to {stop:.1f} s: shorter than one window ({window_s:g} s), left out")
    return parts, notes


# ---- windows, smoothing, timeline ----------------------------------------------------------------


def predict_windows(
    recording: PhoneRecording, predictor: Predictor, smooth_windows: int
) -> tuple[pd.DataFrame, list[str]]:
    """One row per window: segment, start_s, end_s, the probabilities, the smoothed activity and its confidence."""
    data = predictor.data
    step = window_step(data.window, data.overlap)
    parts, notes = segments(recording, data)
    tables = []
    for number, part in enumerate(parts):
        signals = preprocess_recording(
            part.acc,
            part.gyro,
            data.sample_rate_hz,
            data.median_kernel,
            data.lowpass_hz,
            data.lowpass_order,
            data.gravity_hz,
        )
        starts = window_starts(len(signals), data.window, step)
        if len(starts) < predictor.min_windows():
            notes.append(
                f"segment at {part.start_s:.1f} s: fewer than the {predictor.min_windows()} windows the run's series need, left out"
            )
            continue
        probabilities = predictor.probabilities(signals[starts[:, None] + np.arange(data.window)])
        smoothed = ndimage.uniform_filter1d(probabilities, size=smooth_windows, axis=0, mode="nearest")
        table = pd.DataFrame(probabilities, columns=[f"p_{c}" for c in predictor.classes])
        table.insert(0, "segment", number)
        table.insert(1, "start_s", part.start_s + starts / data.sample_rate_hz)
        table.insert(2, "end_s", table["start_s"] + data.window / data.sample_rate_hz)
        table["activity"] = np.array(predictor.classes)[smoothed.argmax(1)]
        table["confidence"] = smoothed.max(1)
        tables.append(table)
    if not tables:
        raise DataError(
            f"{recording.source}: too short for run {predictor.run_ids[0]}: it needs {predictor.min_windows()} windows in one stretch"
        )
    return pd.concat(tables, ignore_index=True), notes


def timeline(windows: pd.DataFrame) -> pd.DataFrame:
    """Runs of one activity: each window stands for the hop around its centre (the first and last of a
    segment reach the segment's edges), runs of the same activity merge. start_s, end_s, activity, confidence."""
    rows = []
    for _segment, part in windows.groupby("segment", sort=True):
        centres = ((part["start_s"] + part["end_s"]) / 2).to_numpy()
        edges = np.concatenate([[part["start_s"].iloc[0]], (centres[1:] + centres[:-1]) / 2, [part["end_s"].iloc[-1]]])
        activity = part["activity"].to_numpy()
        change = np.flatnonzero(np.diff(activity)) + 1
        for first, last in zip(np.concatenate([[0], change]), np.concatenate([change, [len(activity)]])):
            rows.append({
                "start_s": round(float(edges[first]), 3),
                "end_s": round(float(edges[last]), 3),
                "activity": ACTIVITY_NAMES.get(int(activity[first]), str(activity[first])),
                "confidence": round(float(part["confidence"].iloc[first:last].mean()), 4),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=["start_s", "end_s", "activity", "confidence"])


def activity_at(table: pd.DataFrame, times_s: np.ndarray) -> np.ndarray:
    """The timeline's activity name at each time ('' where it has none: before, after, in a gap)."""
    index = np.searchsorted(table["end_s"].to_numpy(), times_s, side="right")
    inside = index < len(table)
    names = np.full(len(times_s), "", dtype=object)
    hit = index[inside]
    within = table["start_s"].to_numpy()[hit] <= times_s[inside]
    names[np.flatnonzero(inside)[within]] = table["activity"].to_numpy()[hit[within]]
    return names


def agreement(table: pd.DataFrame, times_s: np.ndarray, labels: np.ndarray, classes: list[int]) -> float:
    """Share of the labeled time (labels among `classes`) where the timeline names the labeled activity."""
    keep = np.isin(labels, classes)
    expected = np.array([ACTIVITY_NAMES.get(int(label), str(label)) for label in labels[keep]], dtype=object)
    return float(np.mean(activity_at(table, times_s[keep]) == expected))


def minutes_per_activity(table: pd.DataFrame) -> dict[str, float]:
    minutes = (table["end_s"] - table["start_s"]).groupby(table["activity"]).sum() / 60
    return {name: round(float(value), 2) for name, value in minutes.sort_values(ascending=False).items()}


def held_out_agreement(config: Config, predictor: Predictor, folder: Path) -> pd.DataFrame:
    """Each test subject's first HAPT recording, predicted twice: straight from its 50 Hz rows in
    data/raw, and after a round trip through a Sensor Logger export as a phone writes it (100 Hz,
    jittered timestamps, m/s^2, gravity apart, z,y,x order; written into `folder`). One row per
    recording with the labeled minutes and both agreements, and a last, time-weighted `all` row."""
    from pipeline.data.hapt import hapt_experiment
    from pipeline.phone.formats import app_like, write_sensor_logger

    rows = []
    for user in config.data.test_subjects:
        name, values = hapt_experiment(config.raw_dir / HAPT_FOLDER, user, config.data.test_subjects)
        times = np.arange(len(values)) / config.data.sample_rate_hz
        labels = values[:, 6].astype(np.int64)
        direct = PhoneRecording(
            Path(name), "data/raw", Stream(times, values[:, :3], name), Stream(times, values[:, 3:6], name)
        )
        app_times, acc_ms2, gyro = app_like(
            values[:, :3], values[:, 3:6], config.data.sample_rate_hz, 100.0, 0.002, seed=user
        )
        write_sensor_logger(folder / f"{name}.zip", app_times, acc_ms2, gyro)
        row: dict[str, Any] = {
            "subject": user,
            "recording": name,
            "labeled_min": round(np.isin(labels, predictor.classes).sum() / config.data.sample_rate_hz / 60, 2),
        }
        for column, source in (("direct", direct), ("sensor_logger", read_recording(folder / f"{name}.zip"))):
            windows, _notes = predict_windows(source, predictor, config.recording.smooth_windows)
            row[column] = round(agreement(timeline(windows), times, labels, predictor.classes), 4)
        rows.append(row)
    table = pd.DataFrame(rows)
    weights = table["labeled_min"] / table["labeled_min"].sum()
    overall = {
        "subject": "all",
        "recording": f"{len(table)} recordings",
        "labeled_min": round(float(table["labeled_min"].sum()), 2),
    }
    overall.update({column: round(float((table[column] * weights).sum()), 4) for column in ("direct", "sensor_logger")})
    return pd.concat([table, pd.DataFrame([overall])], ignore_index=True)


# ---- the figure -----------------------------------------------------------------------------------


def legend_names(table: pd.DataFrame, labels: tuple[np.ndarray, np.ndarray] | None) -> list[str]:
    """Every activity the figure colours, predicted or labelled, in the activities' order: one legend
    for the predicted bands and the label strip, so a labelled class never predicted has its colour named."""
    order = list(ACTIVITY_NAMES.values())
    shown = set(table["activity"])
    if labels is not None:
        shown |= {ACTIVITY_NAMES[int(label)] for label in np.unique(labels[1]) if int(label) in ACTIVITY_NAMES}
    return sorted(shown, key=lambda name: order.index(name) if name in order else len(order))


def class_colours() -> dict[str, Any]:
    """One colour per class, none reused (bands, legend and label strip share them): tab10's ten,
    then two darker ones for the last two transitions."""
    from matplotlib import colormaps

    palette = [*colormaps["tab10"].colors, "#1a1a6e", "#b8860b"]
    return {name: palette[index % len(palette)] for index, name in enumerate(ACTIVITY_NAMES.values())}


def plot(
    recording: PhoneRecording,
    windows: pd.DataFrame,
    table: pd.DataFrame,
    title: str,
    path: Path,
    labels: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Acceleration and rotation with the predicted activities as coloured bands; the confidence under
    them; with labels, the true activities as a strip of the same colours at the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = legend_names(table, labels)
    colours = class_colours()
    rows = 4 if labels is not None else 3
    figure, axes = plt.subplots(
        rows,
        1,
        figsize=(12, 6.5 + 0.6 * (rows - 3)),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 3, 1.4, 0.5][:rows]},
    )
    for axis, stream, unit in (
        (axes[0], recording.acc, "acceleration (g)"),
        (axes[1], recording.gyro, "rotation (rad/s)"),
    ):
        for i, axis_name in enumerate("xyz"):
            axis.plot(stream.time_s, stream.values[:, i], linewidth=0.5, label=axis_name)
        for row in table.itertuples():
            axis.axvspan(row.start_s, row.end_s, color=colours.get(row.activity, "grey"), alpha=0.25, linewidth=0)
        axis.set_ylabel(unit)
    axes[0].legend(loc="upper right", fontsize=7, ncol=3)
    bands = [plt.Rectangle((0, 0), 1, 1, color=colours.get(name, "grey"), alpha=0.4) for name in names]
    axes[1].legend(
        bands,
        [name.lower() for name in names],
        loc="upper right",
        fontsize=7,
        ncol=min(6, len(names)),
        title="bands: predicted" + ("; bottom strip: labels, same colours" if labels is not None else ""),
        title_fontsize=7,
    )
    centres = (windows["start_s"] + windows["end_s"]) / 2
    for _segment, part in windows.assign(centre=centres).groupby("segment"):
        axes[2].plot(part["centre"], part["confidence"], color="black", linewidth=0.8)
    axes[2].set_ylim(0, 1.02)
    axes[2].set_ylabel("confidence")
    if labels is not None:
        times, values = labels
        for start, stop, label in label_runs(values):
            name = ACTIVITY_NAMES.get(int(label))
            if name is not None:
                axes[3].axvspan(
                    times[start],
                    times[min(stop, len(times) - 1)],
                    color=colours.get(name, "grey"),
                    alpha=0.6,
                    linewidth=0,
                )
        axes[3].set_yticks([])
        axes[3].set_ylabel("labels", rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("time (s)")
    axes[0].set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---- the stage ------------------------------------------------------------------------------------


def plain_options(config: Config) -> PlainColumns:
    r = config.recording
    return PlainColumns(r.columns, r.units, r.gyro_units, r.time_unit)


def recording_name(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A labels file (time_s, label: activity numbers, anything else unlabeled) -> (times, labels)."""
    table = pd.read_csv(path)
    if not {"time_s", "label"} <= set(table.columns):
        raise DataError(f"{path}: a labels file needs columns time_s and label")
    return table["time_s"].to_numpy(np.float64), table["label"].to_numpy(np.int64)


def analyse(config: Config, path: Path, run_ids: list[str], labels: Path | None = None) -> Path:
    recording = read_recording(path, plain_options(config))
    check_long_enough(recording, config.data)  # before loading models: a short file is refused at once
    predictor = load_predictor(config, run_ids)
    windows, notes = predict_windows(recording, predictor, config.recording.smooth_windows)
    table = timeline(windows)
    for note in notes:
        log.info(f"note: {note}")
    minutes = minutes_per_activity(table)
    summary = {
        "source": str(path),
        "format": recording.format,
        "runs": predictor.run_ids,
        "classes": predictor.classes,
        "inputs": "raw windows"
        if predictor.channels == RAW_CHANNELS
        else f"{predictor.data.series_length} windows' mean features",
        "sample_rate_hz": predictor.data.sample_rate_hz,
        "app_rate_hz": {
            "acc": round(1 / float(np.median(np.diff(recording.acc.time_s))), 2),
            "gyro": round(1 / float(np.median(np.diff(recording.gyro.time_s))), 2),
        },
        "segments": int(windows["segment"].nunique()),
        "windows": len(windows),
        "smooth_windows": config.recording.smooth_windows,
        "notes": notes,
        "minutes": minutes,
    }
    truth = read_labels(labels) if labels is not None else None
    if truth is not None:
        summary["agreement"] = round(agreement(table, *truth, predictor.classes), 4)
    target = config.path("reports", "recordings", recording_name(path))
    with atomic_folder(target) as folder:
        windows.to_csv(folder / "windows.csv", index=False, float_format="%.5f")
        table.to_csv(folder / "timeline.csv", index=False)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot(
            recording,
            windows,
            table,
            f"{recording_name(path)} ({recording.format}): {', '.join(predictor.run_ids)}",
            folder / "timeline.png",
            truth,
        )
    total = (table["end_s"] - table["start_s"]).sum() / 60
    spent = ", ".join(f"{name.lower()} {value:.1f}" for name, value in minutes.items())
    log.info(
        f"wrote {target}/: {total:.1f} min in {summary['segments']} segment(s), {len(table)} activity bouts; minutes: {spent}"
    )
    if labels is not None:
        print(f"agreement with {labels}: {summary['agreement']:.3f} of the labeled time")
    return target


def check_held_out(config: Config, run_ids: list[str]) -> Path:
    """`make recording-check`: held_out_agreement as a markdown table in reports/recordings/."""
    import tempfile

    predictor = load_predictor(config, run_ids)
    with tempfile.TemporaryDirectory() as folder:
        table = held_out_agreement(config, predictor, Path(folder))
    target = config.path("reports", "recordings", f"held_out_{'+'.join(predictor.run_ids)}.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    text = (
        f"Timeline agreement with HAPT's labels, runs {', '.join(predictor.run_ids)}, smoothing {config.recording.smooth_windows} windows: "
        "straight from data/raw and through a Sensor Logger export (100 Hz, jitter, m/s^2, gravity apart).\n\n"
        + table.to_markdown(index=False)
        + "\n"
    )
    with atomic_file(target) as temp:
        temp.write_text(text)
    print(text + f"wrote {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.phone.recording", __doc__)
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="instead of --file: the agreement on every test subject's first HAPT recording, straight and through a Sensor Logger export",
    )
    parser.add_argument(
        "--file",
        default="",
        help="a Sensor Logger zip or folder, a phyphox export, or a plain CSV (with recording.columns)",
    )
    parser.add_argument(
        "--run", default="", help="run ids separated by spaces, averaged (default: the best run of the competition)"
    )
    parser.add_argument(
        "--labels",
        default="",
        help="optional CSV (time_s, label) of the true activities: the timeline's agreement is reported",
    )
    parser.add_argument(
        "--columns", default="", help="a plain CSV's columns: time,acc x,y,z,gyro x,y,z (recording.columns)"
    )
    parser.add_argument("--units", default="", help="a plain CSV's acceleration unit: g or m/s2 (recording.units)")
    parser.add_argument(
        "--gyro", default="", help="a plain CSV's gyroscope unit: rad/s or deg/s (recording.gyro_units)"
    )
    args = parser.parse_args(argv)
    if args.held_out:
        return run_stage(lambda config: check_held_out(config, args.run.split()), args, keras=True)
    if not args.file:
        parser.error(
            "give the recording: make recording FILE=<a Sensor Logger zip or folder, a phyphox export or a CSV>"
        )
    extra = [f"recording.columns={json.dumps(args.columns.split(','))}"] if args.columns else []
    extra += [f"recording.units={json.dumps(args.units)}"] if args.units else []
    extra += [f"recording.gyro_units={json.dumps(args.gyro)}"] if args.gyro else []
    labels = Path(args.labels) if args.labels else None
    return run_stage(
        lambda config: analyse(config, Path(args.file), args.run.split(), labels), args, keras=True, extra=extra
    )


if __name__ == "__main__":
    sys.exit(main())
