"""Data tests on the real embedded HAPT data, prepared once per session by `make data prepare`."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import Config
from pipeline.data import datasets, hapt
from pipeline.data.competition import DataError, load_competition
from pipeline.data.signals import channel_std
from pipeline.stages import download, prepare

pytestmark = pytest.mark.slow


def test_raw_hapt_is_complete_documented_and_read_only(prepared_config: Config):
    folder = prepared_config.raw_dir / "hapt"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"]["sha256"] == hapt.HAPT_SHA256
    assert manifest["users"] == 30 and len(manifest["experiments"]) == 61
    assert 1_100_000 < manifest["total_rows"] < 1_150_000
    first = manifest["experiments"][0]
    table = pd.read_csv(folder / first["file"])
    assert list(table.columns) == [*hapt.SENSOR_COLUMNS, "label"]
    assert len(table) == first["rows"] and download.sha256_file(folder / first["file"]) == first["sha256"]
    assert set(table["label"].unique()) <= set(range(-1, 13)) - {0}
    assert not (folder / first["file"]).stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_a_tampered_package_file_is_refused(tmp_path: Path):
    fake = tmp_path / "HAPT.pkl.gz"
    fake.write_bytes(b"not the real file")
    with pytest.raises(DataError, match="SHA-256"):
        download.write_hapt(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_raw_splits_share_no_subject_read_from_the_files(prepared_config: Config):
    """Subjects as the series files record them (not as the data card claims)."""
    competition = load_competition(prepared_config.processed_dir / "raw")
    with np.load(prepared_config.private_dir / "raw" / datasets.CLEAN_TEST) as clean:
        test_subjects, test_ids = set(clean["subject"].tolist()), clean["id"]
    np.testing.assert_array_equal(test_ids, competition.test.ids)
    subjects = {
        "train": set(competition.train.subjects.tolist()),
        "validation": set(competition.validation.subjects.tolist()),
        "test": test_subjects,
    }
    assert (
        not subjects["train"] & subjects["validation"]
        and not subjects["train"] & subjects["test"]
        and not subjects["validation"] & subjects["test"]
    )
    assert subjects["test"] == set(prepared_config.data.test_subjects) and subjects["validation"] == set(
        prepared_config.data.validation_subjects
    )
    assert competition.activities == (1, 2, 3, 4, 5, 6)
    card = json.loads((prepared_config.processed_dir / "raw" / "datacard.json").read_text())
    assert {split: set(card["subjects"][split]) for split in subjects} == subjects  # and the card tells the truth


def test_raw_window_counts_are_within_3_percent_of_uci_har(prepared_config: Config):
    card = json.loads((prepared_config.processed_dir / "raw" / "datacard.json").read_text())
    assert abs(card["windows"]["difference_percent"]["train_and_validation"]) < 3
    assert abs(card["windows"]["difference_percent"]["test"]) < 3
    competition = load_competition(prepared_config.processed_dir / "raw")
    assert competition.series_shape == (128, 9)
    assert len(competition.train) + len(competition.validation) == card["windows"]["train_and_validation"]
    assert "UCI HAR: 7352 and 2947" in (prepared_config.processed_dir / "raw" / "DATACARD.md").read_text()


@pytest.mark.parametrize("name", ["raw", "classroom"])
def test_test_noise_reaches_its_level_and_the_answer_key_stays_private(prepared_config: Config, name: str):
    competition = load_competition(prepared_config.processed_dir / name)
    card = json.loads((prepared_config.processed_dir / name / "datacard.json").read_text())
    with np.load(prepared_config.private_dir / name / datasets.CLEAN_TEST) as clean:
        clean_series, clean_ids = clean["series"], clean["id"]
    np.testing.assert_array_equal(clean_ids, competition.test.ids)
    std = np.array(list(card["noise"]["channel_std"].values()))
    np.testing.assert_allclose(channel_std(competition.test.series - clean_series) / std, 0.5, rtol=0.03)
    solution = pd.read_csv(prepared_config.private_dir / name / datasets.SOLUTION, dtype={"file": str})
    assert list(solution.columns) == ["file", "activity", "Usage"]
    assert set(solution["file"]) == set(competition.test.ids)
    assert 0.2 < (solution["Usage"] == "Public").mean() < 0.4
    participant_files = {p.name for p in (prepared_config.processed_dir / name).rglob("*")}
    assert datasets.SOLUTION not in participant_files and datasets.CLEAN_TEST not in participant_files


def test_loader_round_trips_what_prepare_built(prepared_config: Config):
    """Rebuild the classroom competition in memory and compare with what the loader reads from disk."""
    _manifest, recordings = hapt.read_hapt(prepared_config.raw_dir / "hapt")
    windows = prepare.window_hapt(recordings, prepared_config)
    built = prepare.build_series(windows, "csv", prepared_config)
    splits, clean_test, _solution, _std = prepare.make_competition(built, prepared_config)
    loaded = load_competition(prepared_config.processed_dir / "classroom")
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(loaded, name).ids, splits[name].ids)
        np.testing.assert_allclose(getattr(loaded, name).series, splits[name].series, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(loaded.train.labels, splits["train"].labels)
    # The classroom files carry no subject: the rebuild from the recordings tells whose each series is.
    subjects = {name: set(splits[name].subjects.tolist()) for name in ("train", "validation")} | {
        "test": set(clean_test.subjects.tolist())
    }
    assert (
        not subjects["train"] & subjects["validation"]
        and not subjects["train"] & subjects["test"]
        and not subjects["validation"] & subjects["test"]
    )
    assert subjects["test"] == set(prepared_config.data.test_subjects) and subjects["validation"] == set(
        prepared_config.data.validation_subjects
    )
    assert loaded.activities == (1, 2, 3, 4, 5, 6)
