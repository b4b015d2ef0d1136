"""End-to-end: the real make targets, run as a user runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.competition import Split, load_competition, write_competition
from tests.conftest import run_make

pytestmark = pytest.mark.slow


def test_help_is_the_default_and_lists_every_target():
    result = run_make()
    assert result.returncode == 0
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    targets = [line.split(":")[0] for line in makefile.splitlines() if "## " in line and not line.startswith("\t")]
    assert {"all", "data", "prepare", "test", "install"} <= set(targets)
    for target in targets:
        assert f"make {target} " in result.stdout


def test_second_run_does_no_work(prepared_root: Path):
    card = prepared_root / "data" / "processed" / "classroom" / "datacard.json"
    before = card.stat().st_mtime_ns
    result = run_make("data", "prepare", f"SET=paths.root={prepared_root}")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout and "wrote" not in result.stdout
    assert card.stat().st_mtime_ns == before
    # Naming one of the two competitions does not rebuild them: they come from one windowing.
    named = run_make("prepare", "COMPETITION=raw", f"SET=paths.root={prepared_root}")
    assert named.returncode == 0 and "up to date" in named.stdout and "wrote" not in named.stdout, named.stdout + named.stderr
    assert card.stat().st_mtime_ns == before


def test_local_source_becomes_a_competition(tmp_path: Path):
    rng = np.random.default_rng(0)
    source = tmp_path / "my-comp"
    source.mkdir()
    splits = {
        "train": Split(rng.normal(size=(8, 7, 4)).astype(np.float32), np.array([f"t{k}" for k in range(8)]), rng.integers(1, 3, 8)),
        "test": Split(rng.normal(size=(3, 7, 4)).astype(np.float32), np.array([f"x{k}" for k in range(3)])),
    }
    write_competition(source, "csv", ("w", "x", "y", "z"), splits, default_activity=1)
    root = tmp_path / "root"
    result = run_make("data", f"SOURCE=local:{source}", f"SET=paths.root={root}")
    assert result.returncode == 0, result.stderr
    result = run_make("prepare", "COMPETITION=my-comp", f"SET=paths.root={root}")
    assert result.returncode == 0, result.stderr
    loaded = load_competition(root / "data" / "processed" / "my-comp")
    assert loaded.series_shape == (7, 4) and len(loaded.test) == 3


def test_bad_local_source_fails_cleanly(tmp_path: Path):
    source = tmp_path / "broken"
    (source / "train" / "a01").mkdir(parents=True)
    (source / "train" / "a01" / "s1.csv").write_text(",a,b\n0,1,x\n")
    (source / "test").mkdir()
    root = tmp_path / "root"
    result = run_make("data", f"SOURCE=local:{source}", f"SET=paths.root={root}")
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "s1.csv" in error_lines[0] and "non-numeric" in error_lines[0]
    assert not (root / "data" / "raw" / "broken").exists()


def test_make_all_ends_with_a_scored_submission_and_a_report(prepared_root: Path):
    overrides = f"paths.root={prepared_root} train.max_train_series=300 model.units=8 train.epochs=2 train.noise_seeds=1"
    result = run_make("all", f"SET={overrides}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "public score" in result.stdout and "report.md" in result.stdout
    submission = [line for line in result.stdout.splitlines() if line.startswith("wrote") and ".csv" in line][-1]
    assert "/submissions/classroom_bilstm_gn0.5_" in submission
    assert any((prepared_root / "reports").glob("classroom_bilstm_gn0.5_*/report.md"))
