"""The competition loader: round trips and every bad-input case gives a one-line error naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.competition import DataError, Split, load_competition, write_competition

CHANNELS = ("a", "b", "c")


def make_splits(rng: np.random.Generator, length: int = 5) -> dict[str, Split]:
    def split(start: int, count: int, labeled: bool) -> Split:
        ids = np.array([f"{start + k:05d}" for k in range(count)])
        labels = rng.integers(1, 4, size=count) if labeled else None
        return Split(rng.normal(size=(count, length, len(CHANNELS))).astype(np.float32), ids, labels)

    return {"train": split(0, 12, True), "validation": split(100, 6, True), "test": split(200, 7, False)}


@pytest.fixture(params=["csv", "npz"])
def written(request, tmp_path: Path) -> tuple[Path, str, dict[str, Split]]:
    splits = make_splits(np.random.default_rng(0))
    folder = tmp_path / f"tiny-{request.param}"
    folder.mkdir()
    write_competition(folder, request.param, CHANNELS, splits, default_activity=1)
    return folder, request.param, splits


def test_round_trip(written):
    folder, layout, splits = written
    loaded = load_competition(folder)
    assert loaded.layout == layout and loaded.channels == CHANNELS and loaded.series_shape == (5, 3)
    for name, split in splits.items():
        got = getattr(loaded, name)
        order = np.argsort(split.ids)
        np.testing.assert_array_equal(got.ids, split.ids[order])
        np.testing.assert_allclose(got.series, split.series[order], rtol=1e-6)
        if split.labels is not None:
            np.testing.assert_array_equal(got.labels, split.labels[order])
    assert list(loaded.sample_submission.columns) == ["file", "activity"]
    assert loaded.activities == tuple(sorted(set(splits["train"].labels) | set(splits["validation"].labels)))


def first_csv(folder: Path, split: str = "train") -> Path:
    return sorted((folder / split).rglob("*.csv"))[0]


def rewrite(path: Path, text: str) -> None:
    path.write_text(text)


CSV_CASES = {
    "non-numeric": (
        lambda f: rewrite(
            first_csv(f),
            first_csv(f).read_text().replace(first_csv(f).read_text().splitlines()[1].split(",")[1], "abc", 1),
        ),
        "non-numeric",
    ),
    "nan": (
        lambda f: rewrite(
            first_csv(f),
            first_csv(f).read_text().replace(first_csv(f).read_text().splitlines()[1].split(",")[1], "nan", 1),
        ),
        "NaN",
    ),
    "short series": (
        lambda f: rewrite(first_csv(f), "\n".join(first_csv(f).read_text().splitlines()[:-1]) + "\n"),
        "expected 5x3",
    ),
    "wide series": (
        lambda f: rewrite(
            first_csv(f), "\n".join(line + ",1" for line in first_csv(f).read_text().splitlines()) + "\n"
        ),
        "expected 5x3",
    ),
    "unknown activity folder": (lambda f: (f / "train" / "walking").mkdir(), "unknown activity folder"),
    "empty folder": (lambda f: [p.unlink() for p in (f / "test").glob("*.csv")], "no series files"),
    "sample submission mismatch": (lambda f: first_csv(f, "test").unlink(), "does not match the test series"),
    "sample submission header": (
        lambda f: rewrite(f / "sample_submission.csv", "id,label\n1,1\n"),
        "header must be file,activity",
    ),
    "missing test folder": (lambda f: shutil.rmtree(f / "test"), "missing folder"),
    "unreadable csv": (lambda f: first_csv(f).write_bytes(b"\xff\xfe\x00garbage"), "first"),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_csv_layout_rejects_bad_input(tmp_path: Path, case: str):
    folder = tmp_path / "comp"
    folder.mkdir()
    write_competition(folder, "csv", CHANNELS, make_splits(np.random.default_rng(1)), default_activity=1)
    damage, message = CSV_CASES[case]
    damage(folder)
    with pytest.raises(DataError) as error:
        load_competition(folder)
    text = str(error.value)
    assert "\n" not in text and str(folder) in text
    if message != "first":
        assert message in text


@pytest.mark.parametrize("source_split", ["train", "validation"])
def test_duplicate_id_names_both_files(tmp_path: Path, source_split: str):
    folder = tmp_path / "comp"
    folder.mkdir()
    write_competition(folder, "csv", CHANNELS, make_splits(np.random.default_rng(1)), default_activity=1)
    original = sorted((folder / source_split / "a01").glob("*.csv"))[0]
    copy = folder / "train" / "a02" / original.name
    shutil.copy(original, copy)
    with pytest.raises(DataError) as error:
        load_competition(folder)
    text = str(error.value)
    assert str(original) in text and str(copy) in text, text
    assert "np." not in text and "\n" not in text


def test_npz_layout_rejects_bad_input(tmp_path: Path):
    folder = tmp_path / "comp"
    folder.mkdir()
    write_competition(folder, "npz", CHANNELS, make_splits(np.random.default_rng(2)), default_activity=1)
    with np.load(folder / "train.npz") as archive:
        content = dict(archive)
    broken = dict(content, series=np.where(np.arange(5)[None, :, None] == 2, np.nan, content["series"]))
    np.savez(folder / "train.npz", **broken)
    with pytest.raises(DataError, match=r"train\.npz: NaN"):
        load_competition(folder)
    np.savez(folder / "train.npz", **{k: v for k, v in content.items() if k != "activity"})
    with pytest.raises(DataError, match="missing array 'activity'"):
        load_competition(folder)
    np.savez(folder / "train.npz", **dict(content, series=content["series"][:, :, :2]))
    with pytest.raises(DataError, match="do not fit"):
        load_competition(folder)
    (folder / "train.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        load_competition(folder)


def test_sample_submission_may_name_files(tmp_path: Path):
    folder = tmp_path / "comp"
    folder.mkdir()
    write_competition(folder, "csv", CHANNELS, make_splits(np.random.default_rng(3)), default_activity=1)
    sample = pd.read_csv(folder / "sample_submission.csv", dtype={"file": str})
    sample["file"] = sample["file"] + ".csv"
    sample.to_csv(folder / "sample_submission.csv", index=False)
    loaded = load_competition(folder)
    assert all(i.endswith(".csv") for i in loaded.test.ids)
