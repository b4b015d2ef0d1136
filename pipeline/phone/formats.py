"""Phone recordings in the formats apps export, read into one shape: acceleration with gravity in g
and the gyroscope in rad/s, each with its own (uneven) timestamps in seconds.

Recognized by content (the header), not by the file's name:
- **Sensor Logger** (a zip or a folder): per-sensor CSVs with header `time,seconds_elapsed,z,y,x`
  (`time` in UTC nanoseconds, columns in z,y,x order, read by name). `TotalAcceleration.csv` is
  the accelerometer with gravity; where only `Accelerometer.csv` (without gravity) and
  `Gravity.csv` are there, their sum is. m/s^2 and rad/s. Which sensor a file holds is only in its
  name (every file has the same header), so that part goes by name.
- **phyphox** (a zip, a folder or one CSV): `Time (s)` and columns like `Acceleration x (m/s^2)`
  (with gravity), `Linear Acceleration x (m/s^2)` (without) plus `Gravity x (m/s^2)`, `Gyroscope x
  (rad/s)`; one file per sensor or one combined file; comma, tab or semicolon separated.
- **A plain CSV**: a time column and six sensor columns named by `recording.columns` (time, acc x,
  y, z, gyro x, y, z), the acceleration with gravity in `recording.units` (g or m/s2), the gyroscope
  in `recording.gyro_units` (rad/s or deg/s), time in `recording.time_unit` (s, ms, us or ns).

Everything a bad recording can get wrong is a DataError naming the file and the problem. The
writers at the end turn a HAPT recording into each format the way real apps write them (100 Hz
with timestamp jitter, m/s^2, gravity given apart, z,y,x order): `make sample-recording` and the
tests use them.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal as scipy_signal

from pipeline.errors import ConfigError, DataError

STANDARD_GRAVITY = 9.80665  # m/s^2 in one g: UCI HAR's acceleration unit
MIN_RATE_HZ = 20.0  # slower than this cannot carry the 20 Hz band the UCI HAR chain keeps
SENSOR_LOGGER_COLUMNS = {"time", "seconds_elapsed", "x", "y", "z"}
PHYPHOX_COLUMN = re.compile(r"^(Linear Acceleration|Acceleration|Gravity|Gyroscope) ([xyz]) \((.+)\)$")
ACC_UNITS = {"g": 1.0, "m/s2": 1 / STANDARD_GRAVITY, "m/s^2": 1 / STANDARD_GRAVITY, "m/s²": 1 / STANDARD_GRAVITY}
GYRO_UNITS = {"rad/s": 1.0, "deg/s": np.pi / 180, "°/s": np.pi / 180}
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class Stream:
    """One sensor: strictly increasing times (s) and (n, 3) x, y, z values; `origin` names it in messages."""

    time_s: np.ndarray
    values: np.ndarray
    origin: str


@dataclass(frozen=True)
class PhoneRecording:
    source: Path
    format: str  # sensorlogger | phyphox | csv
    acc: Stream  # acceleration with gravity, g
    gyro: Stream  # rad/s


@dataclass(frozen=True)
class PlainColumns:
    """How to read a plain CSV (recording.columns / units / gyro_units / time_unit)."""

    columns: tuple[str, ...] = ()
    units: str = ""
    gyro_units: str = "rad/s"
    time_unit: str = "s"


# ---- reading CSV tables out of a zip, a folder or a file --------------------------------------


def read_table(text: str, origin: str) -> pd.DataFrame:
    """A CSV as apps write it: the separator sniffed (comma, tab, semicolon), a decimal comma accepted."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DataError(f"{origin}: empty file")
    try:
        separator = csv.Sniffer().sniff("\n".join(lines[:5]), delimiters=",;\t").delimiter
    except csv.Error:
        separator = ","
    decimal = "," if separator != "," and len(lines) > 1 and "," in lines[1] else "."
    try:
        table = pd.read_csv(io.StringIO(text), sep=separator, decimal=decimal)
    except (pd.errors.ParserError, ValueError) as error:
        raise DataError(f"{origin}: cannot read as CSV ({str(error).splitlines()[0]})") from None
    table.columns = [str(column).strip().strip('"') for column in table.columns]
    return table


def csv_texts(path: Path) -> dict[str, str]:
    """{origin: text} of every CSV in a zip, a folder (not recursive into hidden folders) or one file."""
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() == ".csv"
            and not any(part.startswith((".", "__MACOSX")) for part in p.relative_to(path).parts)
        )
        return {str(p): p.read_text(encoding="utf-8-sig", errors="replace") for p in files}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [
                n
                for n in archive.namelist()
                if n.lower().endswith(".csv") and not n.startswith("__MACOSX") and not Path(n).name.startswith(".")
            ]
            return {f"{path}:{n}": archive.read(n).decode("utf-8-sig", errors="replace") for n in sorted(names)}
    if path.is_file():
        return {str(path): path.read_text(encoding="utf-8-sig", errors="replace")}
    raise FileNotFoundError(2, "No such file or directory", str(path))


# ---- checks every stream goes through ---------------------------------------------------------


def checked_stream(time_s: np.ndarray, values: np.ndarray, origin: str) -> Stream:
    """The stream, or a DataError naming the first bad row (header = line 1, so data row i is line i + 2)."""
    time_s = np.asarray(time_s, np.float64)
    values = np.asarray(values, np.float64)
    if len(time_s) < 2:
        raise DataError(f"{origin}: fewer than 2 samples")
    bad = np.flatnonzero(~np.isfinite(time_s) | ~np.isfinite(values).all(axis=1))
    if bad.size:
        raise DataError(f"{origin}: line {bad[0] + 2}: a missing or non-numeric value")
    steps = np.diff(time_s)
    if (steps < 0).any():
        row = int(np.flatnonzero(steps < 0)[0]) + 1
        raise DataError(
            f"{origin}: line {row + 2}: timestamps go backwards ({time_s[row]:.4f} s after {time_s[row - 1]:.4f} s)"
        )
    if (steps == 0).any():
        row = int(np.flatnonzero(steps == 0)[0]) + 1
        raise DataError(f"{origin}: line {row + 2}: duplicate timestamp {time_s[row]:.4f} s")
    rate = 1.0 / float(np.median(steps))
    if rate < MIN_RATE_HZ:
        raise DataError(
            f"{origin}: sampled at {rate:.1f} Hz, under the {MIN_RATE_HZ:g} Hz needed (set the app to 50 Hz or faster)"
        )
    return Stream(time_s, values, origin)


def numeric(table: pd.DataFrame, columns: list[str], origin: str) -> np.ndarray:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{origin}: no column {missing[0]!r} (columns: {', '.join(map(str, table.columns))})")
    return table[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)


def unit_factor(unit: str, units: dict[str, float], what: str, origin: str) -> float:
    if unit not in units:
        raise DataError(f"{origin}: unknown {what} unit {unit!r} (known: {', '.join(units)})")
    return units[unit]


def added(base: Stream, extra: Stream) -> Stream:
    """base + extra, `extra` interpolated at base's times (linear acceleration + gravity = acceleration with gravity)."""
    start, stop = max(base.time_s[0], extra.time_s[0]), min(base.time_s[-1], extra.time_s[-1])
    keep = (base.time_s >= start) & (base.time_s <= stop)
    if keep.sum() < 2:
        raise DataError(f"{base.origin} and {extra.origin}: their times do not overlap")
    times = base.time_s[keep]
    summed = base.values[keep] + np.column_stack([np.interp(times, extra.time_s, extra.values[:, i]) for i in range(3)])
    return Stream(times, summed, f"{base.origin} + {extra.origin}")


def gravity_included(acc: Stream) -> Stream:
    """Refuse acceleration that is not in g with gravity: its median magnitude must be near 1 g."""
    magnitude = float(np.median(np.linalg.norm(acc.values, axis=1)))
    if not 0.5 < magnitude < 2.0:
        hint = (
            " (it looks like m/s^2: give the units as m/s2)"
            if 5 < magnitude < 20
            else " (is gravity missing, or the unit wrong?)"
        )
        raise DataError(f"{acc.origin}: the acceleration's median magnitude is {magnitude:.2f} g, not about 1 g{hint}")
    return acc


# ---- the three formats ---------------------------------------------------------------------------


def read_sensor_logger(path: Path, tables: dict[str, pd.DataFrame]) -> PhoneRecording:
    by_sensor = {
        Path(origin.split(":")[-1]).stem.lower(): (origin, table)
        for origin, table in tables.items()
        if SENSOR_LOGGER_COLUMNS <= set(table.columns)
    }
    # one time origin for every sensor (their own first samples differ); a missing time is reported per file below
    origin_time = np.nanmin([pd.to_numeric(table["time"], errors="coerce").min() for _o, table in by_sensor.values()])
    if not np.isfinite(origin_time):
        raise DataError(f"{path}: no numeric time in any Sensor Logger file")

    def stream(name: str, scale: float) -> Stream | None:
        if name not in by_sensor:
            return None
        origin, table = by_sensor[name]
        nanoseconds = pd.to_numeric(table["time"], errors="coerce").to_numpy(np.float64)
        return checked_stream(
            (nanoseconds - origin_time) / 1e9, numeric(table, ["x", "y", "z"], origin) * scale, origin
        )

    to_g = 1 / STANDARD_GRAVITY
    gyro = stream("gyroscope", 1.0)
    if gyro is None:
        raise DataError(f"{path}: no gyroscope (Sensor Logger's Gyroscope.csv); record with the gyroscope on")
    total = stream("totalacceleration", to_g)
    if total is None:
        linear, gravity = stream("accelerometer", to_g), stream("gravity", to_g)
        if linear is None or gravity is None:
            raise DataError(
                f"{path}: no acceleration with gravity (needs TotalAcceleration.csv, or Accelerometer.csv and Gravity.csv)"
            )
        total = added(linear, gravity)
    return PhoneRecording(path, "sensorlogger", gravity_included(total), gyro)


def read_phyphox(path: Path, tables: dict[str, pd.DataFrame]) -> PhoneRecording:
    streams: dict[str, Stream] = {}
    for origin, table in tables.items():
        if "Time (s)" not in table.columns:
            continue
        found: dict[str, dict[str, tuple[str, str]]] = {}
        for column in table.columns:
            match = PHYPHOX_COLUMN.match(column)
            if match:
                found.setdefault(match[1], {})[match[2]] = (column, match[3])
        for sensor, axes in found.items():
            if set(axes) != {"x", "y", "z"}:
                raise DataError(f"{origin}: {sensor} needs x, y and z columns, found {', '.join(sorted(axes))}")
            unit = axes["x"][1]
            scale = unit_factor(unit, GYRO_UNITS if sensor == "Gyroscope" else ACC_UNITS, sensor.lower(), origin)
            values = numeric(table, [axes[a][0] for a in "xyz"], origin) * scale
            streams[sensor] = checked_stream(numeric(table, ["Time (s)"], origin)[:, 0], values, origin)
    if "Gyroscope" not in streams:
        raise DataError(f"{path}: no gyroscope (phyphox 'Gyroscope x (rad/s)' columns); record the gyroscope too")
    if "Acceleration" in streams:
        total = streams["Acceleration"]
    elif "Linear Acceleration" in streams and "Gravity" in streams:
        total = added(streams["Linear Acceleration"], streams["Gravity"])
    else:
        raise DataError(
            f"{path}: no acceleration with gravity (phyphox 'Acceleration x (m/s^2)' columns, or linear acceleration and gravity)"
        )
    return PhoneRecording(path, "phyphox", gravity_included(total), streams["Gyroscope"])


def read_plain(path: Path, tables: dict[str, pd.DataFrame], options: PlainColumns) -> PhoneRecording:
    if len(tables) != 1:
        raise DataError(f"{path}: a plain recording is one CSV file, found {len(tables)}")
    if len(options.columns) != 7:
        raise ConfigError(
            f"recording.columns must name 7 columns (time, acc x, y, z, gyro x, y, z), got {len(options.columns)}"
        )
    ((origin, table),) = tables.items()
    if not options.units:
        raise DataError(f"{origin}: unknown acceleration units: give UNITS=g or UNITS=m/s2")
    acc_scale = unit_factor(options.units, ACC_UNITS, "acceleration", origin)
    gyro_scale = unit_factor(options.gyro_units, GYRO_UNITS, "gyroscope", origin)
    time_scale = unit_factor(options.time_unit, TIME_UNITS, "time", origin)
    values = numeric(table, list(options.columns), origin)
    times = (values[:, 0] - values[0, 0]) * time_scale
    acc = checked_stream(times, values[:, 1:4] * acc_scale, origin)
    gyro = checked_stream(times, values[:, 4:7] * gyro_scale, origin)
    return PhoneRecording(path, "csv", gravity_included(acc), gyro)


def read_recording(path: Path, options: PlainColumns = PlainColumns()) -> PhoneRecording:
    """Any supported recording, recognized by its headers; a plain CSV needs `options.columns`."""
    path = Path(path)
    texts = csv_texts(path)
    if not texts:
        raise DataError(f"{path}: no CSV files in it")
    tables = {origin: read_table(text, origin) for origin, text in texts.items()}
    if any(SENSOR_LOGGER_COLUMNS <= set(table.columns) for table in tables.values()):
        return read_sensor_logger(path, tables)
    if any(
        "Time (s)" in table.columns and any(PHYPHOX_COLUMN.match(c) for c in table.columns) for table in tables.values()
    ):
        return read_phyphox(path, tables)
    if options.columns:
        return read_plain(path, tables, options)
    raise DataError(
        f"{path}: not a Sensor Logger or phyphox export; for a plain CSV give COLUMNS=time,ax,ay,az,gx,gy,gz UNITS=g|m/s2 [GYRO=rad/s|deg/s]"
    )


# ---- writing a recording the way apps do (samples and tests) -------------------------------------


def app_like(
    acc_g: np.ndarray, gyro: np.ndarray, rate_hz: float, app_rate_hz: float, jitter_s: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 50 Hz recording as a phone app delivers it: resampled to `app_rate_hz` with jittered, uneven
    timestamps. Returns (times in s, acceleration with gravity in m/s^2, gyroscope in rad/s)."""
    rng = np.random.default_rng(seed)
    signals = np.hstack([acc_g * STANDARD_GRAVITY, gyro])
    up = int(round(app_rate_hz / rate_hz))
    fine = scipy_signal.resample_poly(signals, up, 1, axis=0, padtype="line") if up > 1 else signals
    fine_times = np.arange(len(fine)) / (rate_hz * up)
    times = np.sort(fine_times + rng.normal(0, jitter_s, len(fine_times)))
    times = times[(times >= 0) & (times <= fine_times[-1])]
    times = np.unique(np.round(times, 6))
    values = np.column_stack([np.interp(times, fine_times, fine[:, i]) for i in range(6)])
    return times, values[:, :3], values[:, 3:]


def split_gravity_like_phone(times: np.ndarray, acc_ms2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(linear acceleration, gravity): the phone's gravity estimate, here a 0.3 Hz low-pass."""
    rate = 1 / float(np.median(np.diff(times)))
    sos = scipy_signal.butter(2, 0.3, fs=rate, output="sos")
    gravity = scipy_signal.sosfiltfilt(sos, acc_ms2, axis=0)
    return acc_ms2 - gravity, gravity


def write_sensor_logger(
    target: Path, times: np.ndarray, acc_ms2: np.ndarray, gyro: np.ndarray, total: bool = False
) -> None:
    """A Sensor Logger zip: Accelerometer.csv (without gravity) and Gravity.csv, or TotalAcceleration.csv; Gyroscope.csv; Metadata.csv."""
    start_ns = 1_764_000_000_000_000_000
    nanoseconds = start_ns + np.round(times * 1e9).astype(np.int64)

    def table(values: np.ndarray) -> str:
        frame = pd.DataFrame(
            {
                "time": nanoseconds,
                "seconds_elapsed": times - 0.05,
                "z": values[:, 2],
                "y": values[:, 1],
                "x": values[:, 0],
            }
        )
        return frame.to_csv(index=False, float_format="%.6f")

    linear, gravity = split_gravity_like_phone(times, acc_ms2)
    files = {
        "Gyroscope.csv": table(gyro),
        "Metadata.csv": "version,device name,recording time,platform\n1.40.0,Pixel,2026-11-26,android\n",
    }
    files.update(
        {"TotalAcceleration.csv": table(acc_ms2)}
        if total
        else {"Accelerometer.csv": table(linear), "Gravity.csv": table(gravity)}
    )
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(f"{target.stem}/{name}", text)


def write_phyphox(
    target: Path, times: np.ndarray, acc_ms2: np.ndarray, gyro: np.ndarray, combined: bool = False
) -> None:
    """phyphox CSVs in a folder: Accelerometer.csv and Gyroscope.csv, or one combined file."""
    target.mkdir(parents=True, exist_ok=True)
    acc = {f"Acceleration {a} (m/s^2)": acc_ms2[:, i] for i, a in enumerate("xyz")}
    rotation = {f"Gyroscope {a} (rad/s)": gyro[:, i] for i, a in enumerate("xyz")}
    if combined:
        pd.DataFrame({"Time (s)": times, **acc, **rotation}).to_csv(
            target / "Raw Data.csv", index=False, float_format="%.9g"
        )
    else:
        pd.DataFrame({"Time (s)": times, **acc}).to_csv(target / "Accelerometer.csv", index=False, float_format="%.9g")
        pd.DataFrame({"Time (s)": times, **rotation}).to_csv(target / "Gyroscope.csv", index=False, float_format="%.9g")


PLAIN_SAMPLE = PlainColumns(("t_ms", "ax", "ay", "az", "gx", "gy", "gz"), "g", "deg/s", "ms")


def write_plain(target: Path, times: np.ndarray, acc_ms2: np.ndarray, gyro: np.ndarray) -> PlainColumns:
    """A plain CSV in ms, g and deg/s; returns the options that read it."""
    columns = dict(zip(PLAIN_SAMPLE.columns, [times * 1000, *(acc_ms2 / STANDARD_GRAVITY).T, *np.degrees(gyro).T]))
    pd.DataFrame(columns).to_csv(target, index=False, float_format="%.6f")
    return PLAIN_SAMPLE


# ---- `make sample-recording`: a held-out HAPT recording as a phone app would export it ---------------

FORMATS = ("sensorlogger", "phyphox", "csv")


def write_format(
    target: Path, fmt: str, times: np.ndarray, acc_ms2: np.ndarray, gyro: np.ndarray
) -> PlainColumns | None:
    """Write one format; the plain CSV returns the options that read it back."""
    if fmt == "sensorlogger":
        write_sensor_logger(target, times, acc_ms2, gyro)
    elif fmt == "phyphox":
        write_phyphox(target, times, acc_ms2, gyro)
    elif fmt == "csv":
        return write_plain(target, times, acc_ms2, gyro)
    else:
        raise ConfigError(f"unknown recording format {fmt!r} (known: {', '.join(FORMATS)})")
    return None
