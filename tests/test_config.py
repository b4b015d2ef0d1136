from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import PROJECT_ROOT, ConfigError, load_config, parse_override


def test_defaults_are_the_uci_har_protocol():
    config = load_config()
    assert config.data.window == 128 and config.data.overlap == 0.5
    assert config.data.test_subjects == (2, 4, 9, 10, 12, 13, 18, 20, 24)
    assert config.root == PROJECT_ROOT
    assert config.path("data", "raw") == PROJECT_ROOT / "data" / "raw"


def test_override_reads_toml_values():
    assert parse_override("data.test_noise=0.8") == {"data": {"test_noise": 0.8}}
    assert parse_override("data.validation_subjects=[1, 2]") == {"data": {"validation_subjects": [1, 2]}}
    assert parse_override("data.source=local:/tmp/x") == {"data": {"source": "local:/tmp/x"}}
    config = load_config(None, ["data.validation_subjects=[1, 3]", "data.test_noise=1"])
    assert config.data.validation_subjects == (1, 3)
    assert config.data.test_noise == 1.0 and isinstance(config.data.test_noise, float)


def test_experiment_file_then_overrides(tmp_path: Path):
    experiment = tmp_path / "exp.toml"
    experiment.write_text("[data]\ntest_noise = 0.7  # louder test\nclasses = 12\n")
    config = load_config(experiment, ["data.classes=6"])
    assert config.data.test_noise == 0.7
    assert config.data.classes == 6


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.tset_noise=0.5", "unknown config key data.tset_noise"),
        ("dta.source=x", "unknown config key dta"),
        ("data.window=wide", "expected int"),
        ("data.classes=7", "must be 6 or 12"),
        ("data.validation_subjects=[2]", "both"),
        ("data.overlap=1.0", "overlap"),
        ("data=3", "is a section"),
        ("novalue", "section.key=value"),
    ],
)
def test_bad_config_is_a_clear_error(override: str, message: str):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, [override])


def test_missing_or_invalid_experiment_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[data\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(broken)


def test_config_is_frozen():
    config = load_config()
    with pytest.raises(AttributeError):
        config.data.window = 64  # type: ignore[misc]


def test_the_default_experiments_run_id_stays_the_one_the_readme_shows():
    """Run ids are how a stage finds a run: new config fields left at their defaults must not move them."""
    from pipeline.runs.registry import cv_id_for, run_id_for

    assert run_id_for(load_config("experiments/default.toml")) == "classroom_bilstm_gn0.5_264a2166"
    raw = ["data.competition=raw", "train.epochs=40", "train.patience=8", "cv.folds=3"]
    # nested selection gives the folds other training series, so the CV has a new id; the old protocol keeps its own
    assert cv_id_for(load_config("experiments/default.toml", raw)) == "raw_cv3_bilstm_gn0.5_535e2178"
    assert (
        cv_id_for(load_config("experiments/default.toml", [*raw, "cv.inner_folds=0"]))
        == "raw_cv3_bilstm_gn0.5_36f5bbb9"
    )
