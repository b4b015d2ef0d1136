"""make recording: phone formats in, one preprocessing path, a timeline out; bad recordings refused.

Unit tests use small synthetic recordings; the proof on real signals turns held-out HAPT
recordings (test subjects only) into what phone apps write and requires the timeline to agree
with HAPT's labels, and with predicting the same recording straight from data/raw.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.phone import formats, recording, sample_recording
from pipeline.phone.formats import STANDARD_GRAVITY, PhoneRecording, PlainColumns, Stream
from tests.conftest import run_make

RATE = 50.0


def synthetic(seconds: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """50 Hz acceleration in g (gravity mostly on z, a distinct slow wave per axis) and gyroscope in rad/s."""
    t = np.arange(int(seconds * RATE)) / RATE
    acc = np.column_stack(
        [
            0.1 * np.sin(2 * np.pi * 0.5 * t),
            0.2 + 0.05 * np.cos(2 * np.pi * 0.7 * t),
            0.97 + 0.02 * np.sin(2 * np.pi * 1.1 * t),
        ]
    )
    gyro = np.column_stack([0.3 * np.sin(2 * np.pi * 0.4 * t), -0.1 + 0 * t, 0.2 * np.cos(2 * np.pi * 0.9 * t)])
    return acc, gyro


def app_recording(seconds: float = 20.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    acc, gyro = synthetic(seconds)
    times, acc_ms2, app_gyro = formats.app_like(acc, gyro, RATE, 100.0, 0.002, seed=1)
    return acc, gyro, times, acc_ms2, app_gyro


def at_app_times(reference: np.ndarray, times: np.ndarray) -> np.ndarray:
    grid = np.arange(len(reference)) / RATE
    return np.column_stack([np.interp(times, grid, reference[:, i]) for i in range(3)])


@pytest.mark.parametrize("layout", ["sensorlogger", "sensorlogger_total", "phyphox", "phyphox_combined", "csv"])
def test_each_format_reads_back_in_g_and_rad_per_s_in_x_y_z_order(tmp_path, layout):
    acc, gyro, times, acc_ms2, app_gyro = app_recording()
    options = PlainColumns()
    if layout.startswith("sensorlogger"):
        path = tmp_path / "Recording.zip"
        formats.write_sensor_logger(path, times, acc_ms2, app_gyro, total=layout.endswith("total"))
        with zipfile.ZipFile(path) as archive:
            header = archive.read("Recording/Gyroscope.csv").decode().splitlines()[0]
        assert header == "time,seconds_elapsed,z,y,x"  # as the app writes it: read by name, not position
    elif layout.startswith("phyphox"):
        path = tmp_path / "phyphox export"
        formats.write_phyphox(path, times, acc_ms2, app_gyro, combined=layout.endswith("combined"))
    else:
        path = tmp_path / "mine.csv"
        options = formats.write_plain(path, times, acc_ms2, app_gyro)
    read = formats.read_recording(path, options)
    assert read.format == layout.split("_")[0]
    inner = slice(20, -20)  # the gravity split's filter edges aside
    np.testing.assert_allclose(read.acc.values[inner], at_app_times(acc, read.acc.time_s)[inner], atol=2e-3)
    np.testing.assert_allclose(read.gyro.values[inner], at_app_times(gyro, read.gyro.time_s)[inner], atol=2e-3)
    assert 99 < 1 / np.median(np.diff(read.acc.time_s)) < 101


def test_formats_are_recognized_by_content_not_by_name(tmp_path):
    _acc, _gyro, times, acc_ms2, app_gyro = app_recording()
    formats.write_phyphox(tmp_path / "x", times, acc_ms2, app_gyro, combined=True)
    renamed = tmp_path / "export.txt"
    (tmp_path / "x" / "Raw Data.csv").rename(renamed)
    assert formats.read_recording(renamed).format == "phyphox"
    semicolons = tmp_path / "semicolons.csv"  # phyphox's "semicolon, decimal comma" export
    table = pd.read_csv(renamed)
    semicolons.write_text(table.to_csv(index=False, sep=";", decimal=","))
    np.testing.assert_allclose(
        formats.read_recording(semicolons).acc.values, formats.read_recording(renamed).acc.values
    )


def test_resampling_keeps_the_signal_and_removes_what_would_alias():
    """100 Hz -> 50 Hz: a 2 Hz wave survives (jittered timestamps too); a 40 Hz wave, above the new
    Nyquist frequency of 25 Hz, is filtered out instead of folding back as a 10 Hz wave."""
    rng = np.random.default_rng(0)
    grid = 1.0 + np.arange(1000) / RATE
    inner = slice(50, -50)
    jittered = np.sort(np.arange(3000) / 100 + rng.normal(0, 0.001, 3000))
    slow = recording.resample(Stream(jittered, np.sin(2 * np.pi * 2 * jittered)[:, None], "slow"), 1.0, 1000, RATE)
    np.testing.assert_allclose(slow[inner, 0], np.sin(2 * np.pi * 2 * grid)[inner], atol=0.02)
    even = np.arange(3000) / 100
    fast = recording.resample(
        Stream(even, np.column_stack([np.sin(2 * np.pi * 40 * even), np.sin(2 * np.pi * 2 * even)]), "fast"),
        1.0,
        1000,
        RATE,
    )
    assert np.abs(fast[inner, 0]).max() < 0.05  # every second sample of it would swing between -0.95 and 0.95
    assert np.abs(np.sin(2 * np.pi * 40 * grid)).max() > 0.9
    np.testing.assert_allclose(fast[inner, 1], np.sin(2 * np.pi * 2 * grid)[inner], atol=0.01)


def table_of(rows: list[tuple[int, float, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"segment": s, "start_s": a, "end_s": a + 2.56, "activity": c, "confidence": p} for s, a, c, p in rows]
    )


def test_timeline_merges_runs_and_splits_hops_at_window_centres():
    windows = table_of([(0, 0.0, 1, 0.9), (0, 1.28, 1, 0.7), (0, 2.56, 4, 0.6), (1, 10.0, 4, 0.8), (1, 11.28, 4, 0.6)])
    table = recording.timeline(windows)
    assert table[["start_s", "end_s"]].values.tolist() == [[0.0, 3.2], [3.2, 5.12], [10.0, 13.84]]
    assert table["activity"].tolist() == ["WALKING", "SITTING", "SITTING"]
    assert table["confidence"].tolist() == [0.8, 0.6, 0.7]
    names = recording.activity_at(table, np.array([1.0, 4.0, 7.0, 12.0, 20.0]))
    assert names.tolist() == ["WALKING", "SITTING", "", "SITTING", ""]  # nothing in the gap or after the end
    assert (
        recording.agreement(table, np.array([1.0, 4.0, 7.0, 12.0, 2.0]), np.array([1, 4, 4, 5, -1]), [1, 2, 3, 4, 5, 6])
        == 0.5
    )


class Constant:
    """A stand-in model: the same probabilities for every input, one window flipped."""

    def __init__(self, flipped: int):
        self.flipped = flipped

    def predict(self, inputs: np.ndarray, batch_size: int, verbose: int) -> np.ndarray:
        out = np.tile([0.8, 0.2], (len(inputs), 1))
        out[self.flipped] = [0.3, 0.7]
        return out


def test_smoothing_removes_a_one_window_flip_and_can_be_switched_off():
    from pipeline.data.signals import RAW_CHANNELS

    acc, gyro = synthetic(60)
    t = np.arange(len(acc)) / RATE
    steady = PhoneRecording(Path("steady"), "csv", Stream(t, acc, "a"), Stream(t, gyro, "g"))
    predictor = recording.Predictor(["stand-in"], [Constant(10)], load_config(None, []).data, RAW_CHANNELS, [1, 2])
    smoothed, _ = recording.predict_windows(steady, predictor, 5)
    raw, _ = recording.predict_windows(steady, predictor, 1)
    assert (smoothed["activity"] == 1).all()
    assert raw["activity"].tolist().count(2) == 1 and raw["p_2"].iloc[10] == pytest.approx(0.7)
    assert len(recording.timeline(raw)) == 3 and len(recording.timeline(smoothed)) == 1


def test_a_gap_longer_than_a_window_splits_the_recording():
    from pipeline.data.signals import RAW_CHANNELS

    acc, gyro = synthetic(60)
    t = np.arange(len(acc)) / RATE
    t[len(t) // 2 :] += 10.0  # the app paused for 10 s
    paused = PhoneRecording(Path("paused"), "csv", Stream(t, acc, "acc.csv"), Stream(t, gyro, "gyro.csv"))
    predictor = recording.Predictor(["stand-in"], [Constant(0)], load_config(None, []).data, RAW_CHANNELS, [1, 2])
    windows, notes = recording.predict_windows(paused, predictor, 1)
    assert windows["segment"].nunique() == 2 and any(
        "acc.csv: no samples from 30.0 s to 40.0 s" in note for note in notes
    )
    table = recording.timeline(windows)
    assert recording.activity_at(table, np.array([35.0])).tolist() == [""]


def sensor_logger_files(tmp_path: Path, edit=None, drop: str = "") -> Path:
    """A Sensor Logger folder, optionally with one file edited or left out."""
    _acc, _gyro, times, acc_ms2, app_gyro = app_recording(10)
    archive_path = tmp_path / "rec.zip"
    formats.write_sensor_logger(archive_path, times, acc_ms2, app_gyro)
    folder = tmp_path / "rec"
    with zipfile.ZipFile(archive_path) as archive:
        archive.extractall(tmp_path)
    if drop:
        (folder / drop).unlink()
    if edit:
        path = folder / "Gyroscope.csv"
        table = pd.read_csv(path)
        edit(table)
        table.to_csv(path, index=False)
    return folder


def duplicate(table: pd.DataFrame) -> None:
    table.loc[5, "time"] = table.loc[4, "time"]


def backwards(table: pd.DataFrame) -> None:
    table.loc[5, "time"] = table.loc[3, "time"]


def slow(table: pd.DataFrame) -> None:
    table["time"] = table["time"].iloc[0] + (table["time"] - table["time"].iloc[0]) * 8  # 100 Hz -> 12.5 Hz


def short(table: pd.DataFrame) -> None:
    table.drop(table.index[150:], inplace=True)  # 1.5 s of gyroscope


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing gyroscope", "no gyroscope"),
        ("missing gravity", "no acceleration with gravity"),
        ("duplicate timestamps", "Gyroscope.csv: line 7: duplicate timestamp"),
        ("timestamps backwards", "Gyroscope.csv: line 7: timestamps go backwards"),
        ("under 20 Hz", "Gyroscope.csv: sampled at 12.5 Hz, under the 20 Hz"),
        ("shorter than a window", "no stretch of at least one window (2.56 s = 128 samples)"),
        ("unknown units", "unknown acceleration unit 'ft/s^2'"),
        ("plain CSV without units", "unknown acceleration units: give UNITS=g or UNITS=m/s2"),
        ("acceleration in the wrong unit", "g, not about 1 g (it looks like m/s^2: give the units as m/s2)"),
        ("not a recording", "not a Sensor Logger or phyphox export"),
    ],
)
def test_bad_recordings_get_one_line_and_nothing_written(tmp_path, capsys, case, expected):
    edits = {
        "duplicate timestamps": duplicate,
        "timestamps backwards": backwards,
        "under 20 Hz": slow,
        "shorter than a window": short,
    }
    plain = []
    if case == "missing gyroscope":
        path = sensor_logger_files(tmp_path, drop="Gyroscope.csv")
    elif case == "missing gravity":
        path = sensor_logger_files(tmp_path, drop="Gravity.csv")
    elif case in edits:
        path = sensor_logger_files(tmp_path, edit=edits[case])
    elif case == "unknown units":
        path = tmp_path / "phyphox.csv"
        path.write_text(
            "Time (s),Acceleration x (ft/s^2),Acceleration y (ft/s^2),Acceleration z (ft/s^2)\n0,1,2,3\n0.01,1,2,3\n"
        )
    else:
        _acc, _gyro, times, acc_ms2, app_gyro = app_recording(10)
        path = tmp_path / "plain.csv"
        formats.write_plain(path, times, acc_ms2, app_gyro)
        columns = ",".join(formats.PLAIN_SAMPLE.columns)
        plain = {
            "plain CSV without units": ["--columns", columns],
            "acceleration in the wrong unit": [
                "--columns",
                columns,
                "--units",
                "m/s2",
                "--gyro",
                "deg/s",
                "--set",
                "recording.time_unit=ms",
            ],
            "not a recording": [],
        }[case]
        if case == "acceleration in the wrong unit":  # the file holds m/s^2, the options say g
            table = pd.read_csv(path)
            table[["ax", "ay", "az"]] *= STANDARD_GRAVITY
            table.to_csv(path, index=False)
            plain = ["--columns", columns, "--units", "g", "--gyro", "deg/s", "--set", "recording.time_unit=ms"]
    code = recording.main(["--file", str(path), "--set", f"paths.root={tmp_path}", *plain])
    error = capsys.readouterr().err.strip()
    assert code == 1 and error.startswith("error: ") and len(error.splitlines()) == 1, error
    assert expected in error and (str(path) in error or path.name in error), error
    assert not (tmp_path / "reports").exists()


# ---- on real signals: held-out HAPT recordings as phone apps write them ----------------------------


def test_held_out_hapt_recordings_through_an_app_format_agree_with_the_labels(prepared_config, raw_run, tmp_path):
    """Every test subject's first recording, as a Sensor Logger export at 100 Hz with jitter and gravity
    apart: the timeline agrees with HAPT's labels on at least 85% of the labeled time, and within one
    point of predicting the same recording straight from its 50 Hz rows in data/raw."""
    predictor = recording.load_predictor(prepared_config, [raw_run])
    table = recording.held_out_agreement(prepared_config, predictor, tmp_path)
    assert (
        len(table) == len(prepared_config.data.test_subjects) + 1
        and len(list(tmp_path.glob("*.zip"))) == len(table) - 1
    )
    assert (abs(table["sensor_logger"] - table["direct"]) <= 0.01).all(), table
    overall = table.iloc[-1]
    assert overall["subject"] == "all" and overall["sensor_logger"] >= 0.85, table
    assert overall["labeled_min"] > 30  # the nine recordings hold well over half an hour of labeled activity


def test_make_recording_writes_the_timeline_probabilities_and_figure(prepared_root, raw_run):
    samples = prepared_root / "data" / "samples"
    written = run_make("sample-recording", "SUBJECT=9", f"SET=paths.root={prepared_root}")
    assert written.returncode == 0, written.stdout + written.stderr
    (zip_path,) = samples.glob("hapt_*_user09_sensorlogger.zip")
    (labels_path,) = samples.glob("hapt_*_user09_labels.csv")
    result = run_make(
        "recording", f"FILE={zip_path}", f"RUN={raw_run}", f"LABELS={labels_path}", f"SET=paths.root={prepared_root}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    folder = prepared_root / "reports" / "recordings" / zip_path.stem
    summary = json.loads((folder / "summary.json").read_text())
    windows = pd.read_csv(folder / "windows.csv")
    table = pd.read_csv(folder / "timeline.csv")
    assert summary["format"] == "sensorlogger" and summary["runs"] == [raw_run] and summary["agreement"] >= 0.8
    np.testing.assert_allclose(windows.filter(like="p_").sum(axis=1), 1, atol=1e-4)
    assert np.allclose(np.diff(windows["start_s"]), 1.28, atol=1e-6)  # 64-sample hops at 50 Hz
    assert (
        list(table.columns) == ["start_s", "end_s", "activity", "confidence"]
        and (table["end_s"] > table["start_s"]).all()
    )
    assert (folder / "timeline.png").stat().st_size > 10_000
    minutes = ", ".join(f"{name.lower()} {value:.1f}" for name, value in summary["minutes"].items())
    assert f"minutes: {minutes}" in result.stdout and "agreement with" in result.stdout
    # the same held-out recording as phyphox and as a plain CSV (ms, g, deg/s) gives the same timeline's agreement
    config = load_config(
        None,
        [
            f"paths.root={prepared_root}",
            *(
                f"recording.{key}={json.dumps(value)}"
                for key, value in (
                    ("columns", list(formats.PLAIN_SAMPLE.columns)),
                    ("units", "g"),
                    ("gyro_units", "deg/s"),
                    ("time_unit", "ms"),
                )
            ),
        ],
    )
    for fmt in ("phyphox", "csv"):
        path = sample_recording.write_sample(config.raw_dir / "hapt", samples, 9, fmt, config.data.test_subjects)
        other = json.loads((recording.analyse(config, path, [raw_run], labels_path) / "summary.json").read_text())
        assert other["format"] == fmt and abs(other["agreement"] - summary["agreement"]) <= 0.01, (
            fmt,
            other["agreement"],
            summary["agreement"],
        )


def test_a_classroom_run_reads_the_same_windows_as_mean_feature_series(prepared_config, tiny_run, tmp_path):
    _acc, _gyro, times, acc_ms2, app_gyro = app_recording(40)
    formats.write_phyphox(tmp_path / "walk", times, acc_ms2, app_gyro)
    target = recording.analyse(
        load_config(None, [f"paths.root={prepared_config.root}"]), tmp_path / "walk", [tiny_run.name]
    )
    summary = json.loads((target / "summary.json").read_text())
    windows = pd.read_csv(target / "windows.csv")
    assert summary["inputs"] == "5 windows' mean features" and summary["format"] == "phyphox"
    assert len(windows) == 30  # (40 s x 50 Hz - 128) // 64 + 1 windows, each covered by one to five series
    np.testing.assert_allclose(windows.filter(like="p_").sum(axis=1), 1, atol=1e-4)


def test_the_legend_names_labelled_classes_that_were_never_predicted():
    table = pd.DataFrame({"activity": ["STANDING", "WALKING", "STANDING"]})
    labels = (np.arange(4.0), np.array([4, 4, 5, 1]))  # sitting is labelled, never predicted
    assert recording.legend_names(table, labels) == ["WALKING", "SITTING", "STANDING"]
    assert recording.legend_names(table, None) == ["WALKING", "STANDING"]
    colours = recording.class_colours()  # the bands, the legend and the label strip: one colour each
    assert len(colours) == 12 and len({tuple(matplotlib.colors.to_rgb(c)) for c in colours.values()}) == 12
