"""The real `kaggle` client against a local test server: downloads, safe extraction, submissions."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.competition import Split, load_competition, write_competition
from pipeline.data.signals import ACTIVITY_NAMES, MEAN_FEATURES
from tests.conftest import run_make
from tests.kaggle_server import KaggleTestServer

SECRET = "secret-key-123"
DATASET = "uciml/human-activity-recognition-with-smartphones"
COMPETITION = "classroom-daily-activity-recognition"


@pytest.fixture
def server():
    instance = KaggleTestServer()
    port = instance.start()
    instance.port = port
    yield instance
    instance.stop()


@pytest.fixture
def kaggle_env(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment for make: the client talks to the test server with legacy API-key credentials."""
    home = tmp_path / "home"
    home.mkdir()
    for key, value in {
        "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
        "http_proxy": f"http://127.0.0.1:{server.port}",
        "HTTP_PROXY": f"http://127.0.0.1:{server.port}",
        "no_proxy": "",
        "NO_PROXY": "",
        "HOME": str(home),
        "KAGGLE_CONFIG_DIR": str(home / ".kaggle"),
        "KAGGLE_USERNAME": "tester",
        "KAGGLE_KEY": SECRET,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    return tmp_path / "root"


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, content in files.items():
            bundle.writestr(name, content)
    return buffer.getvalue()


def har561_csv(subjects: list[int], rng: np.random.Generator) -> bytes:
    """Rows in recording order: per subject, runs of 8 windows of each activity; 9 mean columns among others."""
    rows = []
    for subject in subjects:
        for activity in range(1, 7):
            for _ in range(8):
                row = {name: rng.normal() for name in MEAN_FEATURES}
                row["tBodyAcc-std()-X"] = rng.normal()
                row.update({"subject": subject, "Activity": ACTIVITY_NAMES[activity]})
                rows.append(row)
    return pd.DataFrame(rows).to_csv(index=False).encode()


def competition_zip(tmp_path: Path) -> bytes:
    rng = np.random.default_rng(0)
    folder = tmp_path / "original"
    folder.mkdir()
    splits = {
        "train": Split(
            rng.normal(size=(12, 5, 9)).astype(np.float32),
            np.array([f"{k}" for k in range(12)]),
            np.tile(np.arange(1, 7), 2),
        ),
        "test": Split(rng.normal(size=(4, 5, 9)).astype(np.float32), np.array([f"{k}" for k in range(100, 104)])),
    }
    write_competition(folder, "csv", MEAN_FEATURES, splits, default_activity=1)
    return zip_bytes({f"data/{p.relative_to(folder)}": p.read_bytes() for p in folder.rglob("*") if p.is_file()})


def no_secret(result) -> None:
    assert SECRET not in result.stdout and SECRET not in result.stderr


def test_dataset_download_becomes_a_classroom_competition(server, kaggle_env: Path):
    rng = np.random.default_rng(1)
    server.files["human-activity-recognition-with-smartphones.zip"] = zip_bytes(
        {"train.csv": har561_csv([1, 3, 5], rng), "test.csv": har561_csv([2, 4], rng)}
    )
    result = run_make("data", f"SOURCE=kaggle-dataset:{DATASET}", f"SET=paths.root={kaggle_env}")
    assert result.returncode == 0, result.stderr
    no_secret(result)
    (call,) = server.calls("DownloadDataset")
    assert call.json() == {"ownerSlug": "uciml", "datasetSlug": "human-activity-recognition-with-smartphones"}
    assert call.headers.get("Authorization", "").startswith("Basic ")
    raw = kaggle_env / "data" / "raw" / "human-activity-recognition-with-smartphones"
    assert (raw / "train.csv").read_bytes() == zipfile.ZipFile(
        io.BytesIO(server.files["human-activity-recognition-with-smartphones.zip"])
    ).read("train.csv")
    again = run_make("data", f"SOURCE=kaggle-dataset:{DATASET}", f"SET=paths.root={kaggle_env}")
    assert again.returncode == 0 and "up to date" in again.stdout and len(server.calls("DownloadDataset")) == 1
    prepared = run_make(
        "prepare",
        "COMPETITION=human-activity-recognition-with-smartphones",
        f"SET=paths.root={kaggle_env} data.validation_subjects=[3]",
    )
    assert prepared.returncode == 0, prepared.stderr
    competition = load_competition(kaggle_env / "data" / "processed" / "human-activity-recognition-with-smartphones")
    assert competition.series_shape == (5, 9) and competition.channels == MEAN_FEATURES
    # 8 windows per run give 4 series of 5 consecutive windows: 6 activities x 4 per subject.
    assert (len(competition.train), len(competition.validation), len(competition.test)) == (2 * 24, 24, 2 * 24)
    assert competition.activities == (1, 2, 3, 4, 5, 6)
    solution = pd.read_csv(
        kaggle_env / "data" / "private" / "human-activity-recognition-with-smartphones" / "solution.csv",
        dtype={"file": str},
    )
    assert set(solution["file"]) == set(competition.test.ids)


def test_competition_download_is_validated_and_kept_as_it_is(server, kaggle_env: Path, tmp_path: Path):
    server.files[f"{COMPETITION}.zip"] = competition_zip(tmp_path)
    result = run_make("data", f"SOURCE=kaggle-competition:{COMPETITION}", f"SET=paths.root={kaggle_env}")
    assert result.returncode == 0, result.stderr
    (call,) = server.calls("DownloadDataFiles")
    assert call.json() == {"competitionName": COMPETITION}
    competition = load_competition(kaggle_env / "data" / "raw" / COMPETITION)
    assert len(competition.train) == 12 and len(competition.test) == 4


def test_an_archive_member_outside_the_target_is_refused(server, kaggle_env: Path, tmp_path: Path):
    server.files[f"{COMPETITION}.zip"] = zip_bytes({"../../escaped.csv": b"x", "train.csv": b"a"})
    result = run_make("data", f"SOURCE=kaggle-competition:{COMPETITION}", f"SET=paths.root={kaggle_env}")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "outside the target folder" in errors[0]
    assert not list(tmp_path.rglob("escaped.csv"))
    assert not (kaggle_env / "data" / "raw" / COMPETITION).exists()


def test_an_http_error_is_one_clear_line_and_writes_nothing(server, kaggle_env: Path):
    server.fail["DownloadDataset"] = 403
    result = run_make("data", f"SOURCE=kaggle-dataset:{DATASET}", f"SET=paths.root={kaggle_env}")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HTTP 403" in errors[0]
    assert not (kaggle_env / "data" / "raw" / "human-activity-recognition-with-smartphones").exists()
    no_secret(result)


def prepared_real_competition(server, kaggle_env: Path, tmp_path: Path) -> Path:
    server.files[f"{COMPETITION}.zip"] = competition_zip(tmp_path)
    assert run_make("data", f"SOURCE=kaggle-competition:{COMPETITION}", f"SET=paths.root={kaggle_env}").returncode == 0
    assert run_make("prepare", f"COMPETITION={COMPETITION}", f"SET=paths.root={kaggle_env}").returncode == 0
    submission = tmp_path / "mine.csv"
    sample = pd.read_csv(kaggle_env / "data" / "processed" / COMPETITION / "sample_submission.csv", dtype={"file": str})
    sample.assign(activity=3).to_csv(submission, index=False)
    return submission


def test_submit_uploads_the_exact_bytes_and_reports_the_score(server, kaggle_env: Path, tmp_path: Path):
    submission = prepared_real_competition(server, kaggle_env, tmp_path)
    result = run_make(
        "submit",
        f"COMPETITION={COMPETITION}",
        f"FILE={submission}",
        "MESSAGE=bilstm gn0.5 try",
        f"SET=paths.root={kaggle_env}",
    )
    assert result.returncode == 0, result.stderr
    no_secret(result)
    (start,) = server.calls("StartSubmissionUpload")
    assert start.json()["competitionName"] == COMPETITION and start.json()["fileName"] == "mine.csv"
    assert start.json()["contentLength"] == submission.stat().st_size
    (put,) = [r for r in server.requests if r.method == "PUT"]
    assert put.body == submission.read_bytes()
    (create,) = server.calls("CreateSubmission")
    assert (
        create.json()["submissionDescription"] == "bilstm gn0.5 try" and create.json()["competitionName"] == COMPETITION
    )
    assert create.headers.get("Authorization", "").startswith("Basic ")
    assert "0.91234" in result.stdout and "COMPLETE" in result.stdout


def test_a_failed_upload_is_reported_as_a_failure(server, kaggle_env: Path, tmp_path: Path):
    submission = prepared_real_competition(server, kaggle_env, tmp_path)
    server.fail["PUT"] = 500
    result = run_make("submit", f"COMPETITION={COMPETITION}", f"FILE={submission}", f"SET=paths.root={kaggle_env}")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "upload did not complete" in errors[0]
    assert not server.calls("CreateSubmission")


def test_missing_credentials_are_caught_before_the_client_runs(
    server, kaggle_env: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    result = run_make("data", f"SOURCE=kaggle-dataset:{DATASET}", f"SET=paths.root={kaggle_env}")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "KAGGLE_USERNAME" in errors[0] and "kaggle.json" in errors[0]
    assert not server.requests


def test_a_world_readable_kaggle_json_gets_a_warning(server, kaggle_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    folder = Path(os.environ["KAGGLE_CONFIG_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kaggle.json").write_text(f'{{"username": "tester", "key": "{SECRET}"}}')
    (folder / "kaggle.json").chmod(0o644)
    server.fail["DownloadDataset"] = 404
    result = run_make("data", f"SOURCE=kaggle-dataset:{DATASET}", f"SET=paths.root={kaggle_env}")
    assert "readable by other users" in result.stderr
    assert server.calls("DownloadDataset")  # the credentials from the file were used
    no_secret(result)
