"""Read, validate and write competition folders: what a Kaggle participant downloads.

Two layouts, both with `sample_submission.csv` (`file,activity`, activity numbered from 1):

csv (the original classroom competition)::

    train/a01..aNN/<id>.csv   one series per file: an index column, then T rows x C named columns
    validation/a01..aNN/<id>.csv   (optional)
    test/<id>.csv
    subject_train.csv, subject_validation.csv   (optional) `file,subject`: whose recording each
                              series is, as UCI HAR ships subject_train.txt (for subject-wise CV)

npz (the raw competition: 128 x 9 windows are too many for one CSV each)::

    train.npz, validation.npz   series (n, T, C) float32, id (n,), activity (n,), subject (n,), channels (C,)
    test.npz                    series, id, channels

`load_competition` turns either into arrays and rejects bad input with a one-line
DataError that names the file and the problem.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError
from pipeline.files import atomic_file, atomic_folder, make_read_only, sha256_file, write_json_atomic
from pipeline.log import log

SAMPLE_SUBMISSION = "sample_submission.csv"
SUBMISSION_COLUMNS = ("file", "activity")
SOURCE_FILE = "source.json"  # written by the download stage beside a copied competition
ACTIVITY_FOLDER = re.compile(r"^a(\d+)$")
SPLITS = ("train", "validation", "test")
SUBJECT_FILE = "subject_{split}.csv"


@dataclass(frozen=True)
class Split:
    """One split: series (n, T, C) float32, ids as the submission names them, labels (from 1) or None."""

    series: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None = None
    subjects: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Competition:
    path: Path
    layout: str  # "csv" or "npz"
    channels: tuple[str, ...]
    train: Split
    validation: Split | None
    test: Split
    sample_submission: pd.DataFrame

    @property
    def activities(self) -> tuple[int, ...]:
        """Every activity number seen in the labeled splits, ascending."""
        labeled = [self.train.labels] + ([self.validation.labels] if self.validation else [])
        return tuple(int(a) for a in np.unique(np.concatenate(labeled)))

    @property
    def series_shape(self) -> tuple[int, int]:
        return tuple(self.train.series.shape[1:])  # type: ignore[return-value]

    def summary(self) -> dict[str, object]:
        return {
            "layout": self.layout,
            "series_shape": list(self.series_shape),
            "channels": list(self.channels),
            "activities": list(self.activities),
            "train": len(self.train),
            "validation": len(self.validation) if self.validation else 0,
            "test": len(self.test),
        }


# ---- reading ---------------------------------------------------------------------------------


def read_series_csv(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """One series CSV (index column first) -> ((T, C) float32, column names).
    A well-formed file is parsed by the csv module (a competition is thousands of tiny files: pandas'
    per-file overhead was most of a training run's start); anything else goes through pandas, whose
    checks name the problem."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            header, *rows = csv.reader(handle)
        values = np.array([[float(cell) for cell in row[1:]] for row in rows], dtype=np.float64)
        if values.ndim == 2 and values.shape[0] and values.shape[1] == len(header) - 1 and np.isfinite(values).all():
            return values.astype(np.float32), tuple(header[1:])
    except (ValueError, UnicodeDecodeError, csv.Error):
        pass  # not the plain layout: pandas reads it, or says what is wrong
    return _read_series_csv_checked(path)


def _read_series_csv_checked(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    try:
        table = pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise DataError(f"{path}: no data rows or columns")
    for column in table.columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            raise DataError(f"{path}: non-numeric value in column {column!r}")
    values = table.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{path}: NaN or infinite value")
    return values.astype(np.float32), tuple(str(c) for c in table.columns)


def _read_csv_folder(
    folder: Path, labeled: bool
) -> tuple[list[np.ndarray], list[str], list[int], list[Path], tuple[str, ...] | None]:
    series, ids, labels, paths = [], [], [], []
    columns: tuple[str, ...] | None = None
    columns_seen: list[tuple[str, ...]] = []
    if labeled:
        groups = []
        for child in sorted(folder.iterdir()):
            if child.name.startswith("."):
                continue
            match = ACTIVITY_FOLDER.match(child.name)
            if not child.is_dir() or not match or int(match.group(1)) < 1:
                raise DataError(f"{child}: unknown activity folder (expected a01, a02, ...)")
            groups.append((int(match.group(1)), sorted(child.glob("*.csv"))))
    else:
        stray = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if stray:
            raise DataError(f"{stray[0]}: the test folder must hold series files only, not folders")
        groups = [(0, sorted(folder.glob("*.csv")))]
    for activity, files in groups:
        for path in files:
            values, names = read_series_csv(path)
            series.append(values)
            ids.append(path.stem)
            labels.append(activity)
            paths.append(path)
            columns_seen.append(names)
    if series:
        # The most common shape and header is the reference, so the error names the odd file out.
        shapes = Counter((s.shape, c) for s, c in zip(series, columns_seen))
        (shape, columns), _count = shapes.most_common(1)[0]
        for values, names, path in zip(series, columns_seen, paths):
            if values.shape != shape:
                raise DataError(
                    f"{path}: series of {values.shape[0]}x{values.shape[1]}, expected {shape[0]}x{shape[1]} like the others"
                )
            if names != columns:
                raise DataError(f"{path}: columns {list(names)} differ from the others' {list(columns)}")
    if not series:
        raise DataError(f"{folder}: no series files (*.csv)")
    return series, ids, labels, paths, columns


def _load_csv_layout(path: Path) -> tuple[tuple[str, ...], dict[str, Split]]:
    splits: dict[str, Split] = {}
    channels: tuple[str, ...] | None = None
    reference: tuple[int, int] | None = None
    for name in SPLITS:
        folder = path / name
        if not folder.is_dir():
            if name == "validation":
                continue
            raise DataError(f"{folder}: missing folder")
        series, ids, labels, paths, columns = _read_csv_folder(folder, labeled=name != "test")
        if channels is None:
            channels, reference = columns, series[0].shape
        elif series[0].shape != reference or columns != channels:
            raise DataError(
                f"{paths[0]}: series of shape {series[0].shape} with columns {list(columns or ())} differ from train's {reference} {list(channels)}"
            )
        order = np.argsort(ids)  # canonical order: by id, whatever the folder layout
        labels_array = np.array(labels, np.int64)[order] if name != "test" else None
        sorted_ids = np.array(ids)[order]
        splits[name] = Split(
            np.stack(series)[order],
            sorted_ids,
            labels_array,
            _read_subjects(path / SUBJECT_FILE.format(split=name), sorted_ids),
        )
    assert channels is not None
    return channels, splits


def _read_subjects(path: Path, ids: np.ndarray) -> np.ndarray | None:
    """The subject of every series from a `file,subject` CSV, or None when there is no such file."""
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, dtype={"file": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    if list(table.columns) != ["file", "subject"] or not pd.api.types.is_integer_dtype(table["subject"]):
        raise DataError(f"{path}: expected columns file,subject with whole-number subjects")
    by_id = table.drop_duplicates("file").set_index("file")["subject"]
    missing = sorted(set(ids) - set(by_id.index))
    if missing:
        raise DataError(f"{path}: no subject for series {missing[0]} (and {len(missing) - 1} more)")
    return by_id.loc[ids].to_numpy(np.int64)


def _load_npz_split(path: Path, labeled: bool) -> tuple[Split, tuple[str, ...]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            content = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz archive ({error})") from None
    required = ["series", "id", "channels"] + (["activity"] if labeled else [])
    missing = [key for key in required if key not in content]
    if missing:
        raise DataError(f"{path}: missing array {missing[0]!r}")
    series, ids = content["series"], content["id"].astype(str)
    if series.ndim != 3 or series.shape[0] != len(ids) or series.shape[2] != len(content["channels"]):
        raise DataError(
            f"{path}: series of shape {series.shape} do not fit {len(ids)} ids and {len(content['channels'])} channels"
        )
    if not np.issubdtype(series.dtype, np.number):
        raise DataError(f"{path}: series are not numeric ({series.dtype})")
    if not np.isfinite(series).all():
        raise DataError(f"{path}: NaN or infinite value in series")
    labels = subjects = None
    if labeled:
        labels = content["activity"].astype(np.int64)
        if labels.shape != ids.shape or (labels < 1).any():
            raise DataError(f"{path}: activity must hold one number >= 1 per series")
        subjects = content["subject"].astype(np.int64) if "subject" in content else None
    return Split(series.astype(np.float32), ids, labels, subjects), tuple(str(c) for c in content["channels"])


def _load_npz_layout(path: Path) -> tuple[tuple[str, ...], dict[str, Split]]:
    splits: dict[str, Split] = {}
    channels: tuple[str, ...] | None = None
    for name in SPLITS:
        file = path / f"{name}.npz"
        if not file.is_file():
            if name == "validation":
                continue
            raise DataError(f"{file}: missing file")
        split, split_channels = _load_npz_split(file, labeled=name != "test")
        if channels is None:
            channels = split_channels
        elif split_channels != channels or split.series.shape[1:] != splits["train"].series.shape[1:]:
            raise DataError(f"{file}: series shape or channels differ from train's")
        splits[name] = split
    assert channels is not None
    return channels, splits


def read_submission(path: Path) -> pd.DataFrame:
    """A `file,activity` CSV with ids kept as text (so '00012' stays '00012')."""
    try:
        table = pd.read_csv(path, dtype={"file": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    if tuple(table.columns) != SUBMISSION_COLUMNS:
        raise DataError(
            f"{path}: header must be {','.join(SUBMISSION_COLUMNS)}, got {','.join(map(str, table.columns))}"
        )
    return table


def _series_file(path: Path, layout: str, split_name: str, split: Split, index: int) -> str:
    """Where a series lives, as the user finds it: `train/a02/5.csv`, or `train.npz` (row 12)."""
    if layout == "npz":
        return f"{path / split_name}.npz (row {index})"
    folder = path / split_name if split.labels is None else path / split_name / f"a{int(split.labels[index]):02d}"
    return str(folder / f"{split.ids[index]}.csv")


def folder_signature(path: Path) -> tuple[int, int, int]:
    """(files, total bytes, newest mtime) of everything under `path`: changes when any file does."""
    count = size = newest = 0
    pending = [str(path)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                else:
                    info = entry.stat()
                    count, size, newest = count + 1, size + info.st_size, max(newest, info.st_mtime_ns)
    return count, size, newest


_loaded: dict[Path, tuple[tuple[int, int, int], Competition]] = {}


def load_competition(path: str | Path) -> Competition:
    """Load and validate a competition folder of either layout. A stage asks for it several times (a
    CV once per fold): it is read once per process while no file under it changes, its arrays
    read-only so that no caller can change what the next one gets."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such competition folder")
    signature = folder_signature(path)
    cached = _loaded.get(path)
    if cached is not None and cached[0] == signature:
        return cached[1]
    competition = _read_competition(path)
    for split in (competition.train, competition.validation, competition.test):
        for array in (split.series, split.ids, split.labels, split.subjects) if split is not None else ():
            if array is not None:
                array.setflags(write=False)
    _loaded.clear()  # one competition at a time: a big one is not held twice
    _loaded[path] = (signature, competition)
    return competition


def _read_competition(path: Path) -> Competition:
    layout = "npz" if (path / "train.npz").exists() else "csv"
    channels, splits = (_load_npz_layout if layout == "npz" else _load_csv_layout)(path)
    seen: dict[str, str] = {}
    for name, split in splits.items():
        for index, series_id in enumerate(split.ids.tolist()):
            where = _series_file(path, layout, name, split, index)
            if series_id in seen:
                raise DataError(
                    f"{seen[series_id]} and {where}: the same series id {series_id}; ids must be unique across train, validation and test"
                )
            seen[series_id] = where
    sample_path = path / SAMPLE_SUBMISSION
    if not sample_path.is_file():
        raise DataError(f"{sample_path}: missing file")
    sample = read_submission(sample_path)
    test = splits["test"]
    # A submission may name series by id ('00012') or by file name ('00012.csv'): follow the sample.
    if layout == "csv" and sample["file"].astype(str).str.endswith(".csv").all():
        test = Split(test.series, np.array([f"{i}.csv" for i in test.ids]), None, test.subjects)
    if sample["file"].duplicated().any() or set(sample["file"]) != set(test.ids):
        missing = sorted(set(test.ids) - set(sample["file"]))
        extra = sorted(set(sample["file"]) - set(test.ids))
        raise DataError(
            f"{sample_path}: does not match the test series ({len(missing)} test ids missing, "
            f"{len(extra)} unknown ids, {int(sample['file'].duplicated().sum())} duplicates)"
        )
    return Competition(path, layout, channels, splits["train"], splits.get("validation"), test, sample)


# ---- writing ---------------------------------------------------------------------------------


def write_csv_split(folder: Path, split: Split, channels: tuple[str, ...]) -> None:
    """Write one split in the original layout (labeled splits into aNN folders), and the subject of
    each labeled series beside the split folder (subject_<split>.csv)."""
    for index, series_id in enumerate(split.ids):
        target = folder if split.labels is None else folder / f"a{int(split.labels[index]):02d}"
        target.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame(split.series[index], columns=list(channels))
        table.to_csv(target / f"{series_id}.csv", float_format="%.7g")
    if split.subjects is not None and split.labels is not None:
        pd.DataFrame({"file": split.ids, "subject": split.subjects}).to_csv(
            folder.parent / SUBJECT_FILE.format(split=folder.name), index=False
        )


def write_npz_split(file: Path, split: Split, channels: tuple[str, ...]) -> None:
    arrays: dict[str, np.ndarray] = {
        "series": split.series.astype(np.float32),
        "id": split.ids.astype(str),
        "channels": np.array(channels),
    }
    if split.labels is not None:
        arrays["activity"] = split.labels.astype(np.int64)
    if split.subjects is not None:
        arrays["subject"] = split.subjects.astype(np.int64)
    with atomic_file(file) as temp:
        with open(temp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def write_competition(
    folder: Path, layout: str, channels: tuple[str, ...], splits: dict[str, Split], default_activity: int
) -> None:
    """Write a participant folder: the splits in `layout` and a sample submission."""
    for name, split in splits.items():
        if layout == "csv":
            write_csv_split(folder / name, split, channels)
        else:
            write_npz_split(folder / f"{name}.npz", split, channels)
    sample = pd.DataFrame({"file": splits["test"].ids, "activity": default_activity})
    sample.to_csv(folder / SAMPLE_SUBMISSION, index=False)


# ---- copying a competition folder into data/raw ----------------------------------------------------


def folder_digest(folder: Path) -> str:
    """SHA-256 over every file's relative path and content, to tell two copies apart."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SOURCE_FILE):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def copy_competition_folder(source: Path, target: Path, origin: str) -> Path:
    """Validate a competition folder, then copy it once to `target` (data/raw/<name>/, read-only).
    Shared by the local and the Kaggle sources."""
    loaded = load_competition(source)  # raises DataError naming the bad file
    digest = folder_digest(source)
    name = target.name
    record_path = target / SOURCE_FILE
    if record_path.is_file():
        if json.loads(record_path.read_text()).get("digest") == digest:
            log.info(f"data/raw/{name}: up to date")
            return target
        raise DataError(f"{target}: already holds different data; raw data are immutable, choose another NAME=")
    with atomic_folder(target) as temp:
        shutil.copytree(source, temp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        write_json_atomic(
            temp / SOURCE_FILE,
            {"kind": "competition", "origin": origin, "digest": digest, "series": loaded.summary()},
        )
        make_read_only(temp)
    log.info(f"copied {source} to {target}: {loaded.summary()}")
    return target
