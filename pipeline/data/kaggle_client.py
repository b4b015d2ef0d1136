"""Kaggle through the official `kaggle` client: download sources for `make data` and `make submit`.

Sources:
  kaggle-dataset:<owner>/<slug>     a dataset; `uciml/human-activity-recognition-with-smartphones`
                                    (UCI HAR's 561 features) is turned into a classroom-style
                                    competition by `make prepare`, by the same rules as the HAPT one
  kaggle-competition:<slug>         a competition in the original layout, used as it is

The client is imported only after credentials are found (importing it authenticates, and its
`authenticate()` exits the process when there are none). Downloads go to data/raw/.downloads/,
where the client resumes a partial file and skips a complete one; archives are extracted by
`safe_extract`, which refuses any member that would land outside the target folder; the result
is written to data/raw/<name>/ in one atomic step. No key is ever printed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.data.competition import SOURCE_FILE, DataError, copy_competition_folder
from pipeline.data.scoring import submission_message
from pipeline.files import atomic_folder, make_read_only, sha256_file, write_json_atomic
from pipeline.log import log

HAR_DATASET = "uciml/human-activity-recognition-with-smartphones"
CLASSROOM_COMPETITION = "classroom-daily-activity-recognition"
FAILED_UPLOAD = "Could not submit to competition"  # the client's message when the upload PUT failed
CREDENTIALS_HELP = (
    "no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), or put kaggle.json from "
    "https://www.kaggle.com/settings (API > Create New Token) in ~/.kaggle/ with `chmod 600 ~/.kaggle/kaggle.json`"
)


def credentials_source() -> str:
    """Where the client will find credentials; a DataError with set-up help when nowhere."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "the KAGGLE_USERNAME and KAGGLE_KEY environment variables"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "the KAGGLE_API_TOKEN environment variable"
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    path = folder / "kaggle.json"
    if path.is_file():
        try:
            content = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise DataError(
                f"{path}: not valid JSON; download a new token from https://www.kaggle.com/settings"
            ) from None
        if not (content.get("username") and content.get("key")):
            raise DataError(f"{path}: needs both 'username' and 'key'")
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(f"warning: {path} is readable by other users; run `chmod 600 {path}`")
        return str(path)
    raise DataError(CREDENTIALS_HELP)


def client() -> Any:
    """An authenticated KaggleApi (credentials checked first, so the client never exits the process)."""
    credentials_source()
    from kaggle.api.kaggle_api_extended import KaggleApi

    api = KaggleApi()
    try:
        api.authenticate()
    except SystemExit:
        raise DataError(CREDENTIALS_HELP) from None
    return api


def call(action: str, function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a client call, turning HTTP and network failures into one clear line."""
    import requests

    try:
        return function(*args, **kwargs)
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        raise DataError(
            f"Kaggle {action} failed: HTTP {status} ({error.response.reason if error.response is not None else error})"
        ) from None
    except (requests.ConnectionError, requests.Timeout) as error:
        raise DataError(
            f"Kaggle {action} failed: network error ({type(error).__name__}); nothing was written, run again to resume"
        ) from None
    except ValueError as error:
        raise DataError(f"Kaggle {action} failed: {error}") from None


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip into `target`, refusing absolute paths, '..' and links that would land outside it."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            root = target.resolve()
            for member in bundle.infolist():
                destination = (target / member.filename).resolve()
                is_link = stat.S_ISLNK(member.external_attr >> 16)
                if member.filename.startswith(("/", "\\")) or not destination.is_relative_to(root) or is_link:
                    raise DataError(
                        f"{archive}: member {member.filename!r} would land outside the target folder; refused"
                    )
            bundle.extractall(target)
    except zipfile.BadZipFile:
        raise DataError(f"{archive}: not a valid zip archive (corrupt or incomplete download)") from None


def fetch(config: Config, action: str, download: Any, *args: Any) -> Path:
    """Download into data/raw/.downloads/<action>/ (kept, so the client can resume or skip) and return the file."""
    cache = config.raw_dir / ".downloads" / action.replace("/", "_")
    cache.mkdir(parents=True, exist_ok=True)
    call(f"download of {action}", download, *args, path=str(cache), force=False, quiet=True)
    files = [p for p in cache.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise DataError(f"Kaggle download of {action}: no file arrived in {cache}")
    return max(files, key=lambda p: p.stat().st_mtime)


def find_folder_with(root: Path, names: tuple[str, ...]) -> Path:
    """The shallowest folder under `root` holding all `names` (archives often wrap files in a folder)."""
    for folder in sorted([root, *[p for p in root.rglob("*") if p.is_dir()]], key=lambda p: len(p.parts)):
        if all((folder / name).exists() for name in names):
            return folder
    raise DataError(f"{root}: the archive holds no {', '.join(names)}")


def download_kaggle_dataset(config: Config, dataset: str) -> Path:
    """kaggle-dataset:<owner>/<slug> -> data/raw/<name>/ with the dataset's CSV files and source.json."""
    if dataset.count("/") != 1:
        raise DataError(f"kaggle-dataset:{dataset}: expected <owner>/<slug>")
    name = config.data.name or dataset.split("/")[1]
    target = config.raw_dir / name
    if (target / SOURCE_FILE).is_file():
        log.info(f"data/raw/{name}: up to date")
        return target
    api = client()
    archive = fetch(config, dataset, api.dataset_download_files, dataset)
    with tempfile.TemporaryDirectory(dir=config.raw_dir) as scratch:
        safe_extract(archive, Path(scratch))
        folder = find_folder_with(Path(scratch), ("train.csv", "test.csv"))
        with atomic_folder(target) as temp:
            for file in ("train.csv", "test.csv"):
                shutil.copy2(folder / file, temp / file)
            write_json_atomic(
                temp / SOURCE_FILE,
                {"kind": "har561", "origin": f"kaggle-dataset:{dataset}", "archive_sha256": sha256_file(archive)},
            )
            make_read_only(temp)
    log.info(f"downloaded {dataset} to {target}; `make prepare COMPETITION={name}` turns it into a competition")
    return target


def download_kaggle_competition(config: Config, slug: str) -> Path:
    """kaggle-competition:<slug> -> data/raw/<name>/, validated as a competition in the original layout."""
    slug = slug or CLASSROOM_COMPETITION
    name = config.data.name or slug
    if (config.raw_dir / name / SOURCE_FILE).is_file():
        log.info(f"data/raw/{name}: up to date")
        return config.raw_dir / name
    api = client()
    archive = fetch(config, slug, api.competition_download_files, slug)
    with tempfile.TemporaryDirectory(dir=config.raw_dir) as scratch:
        safe_extract(archive, Path(scratch))
        folder = find_folder_with(Path(scratch), ("train", "test", "sample_submission.csv"))
        return copy_competition_folder(folder, config.raw_dir / name, origin=f"kaggle-competition:{slug}")


def submit(config: Config, path: Path, message: str) -> dict[str, Any]:
    """Upload a submission with `competition_submit`, then show its status and score from the submissions list."""
    slug = config.data.competition
    message = submission_message(path, message)
    processed = config.processed_dir / slug
    if processed.is_dir():
        from pipeline.data.competition import load_competition, read_submission
        from pipeline.data.scoring import validate_submission

        competition = load_competition(processed)
        validate_submission(read_submission(path), competition.sample_submission, competition.activities, str(path))
    api = client()
    response = call("submission", api.competition_submit, str(path), message, slug, quiet=True)
    if getattr(response, "message", "") and FAILED_UPLOAD in response.message:
        raise DataError(
            f"Kaggle submission of {path.name} to {slug} failed: the upload did not complete ({response.message})"
        )
    submissions = call("submission list", api.competition_submissions, slug) or []
    latest = submissions[0] if submissions else None
    status = str(getattr(latest, "status", "unknown")) if latest else "unknown"
    score = getattr(latest, "public_score", "") if latest else ""
    log.info(
        f"submitted {path.name} to {slug}: {getattr(response, 'message', '')}; status {status}, public score {score or 'pending'}"
    )
    return {
        "message": getattr(response, "message", ""),
        "ref": getattr(response, "ref", None),
        "status": status,
        "public_score": score,
    }
