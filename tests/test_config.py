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


def test_the_default_experiments_run_id_is_the_one_the_readme_shows():
    """Run ids are how a stage finds a run: the docs name the default run by its id."""
    from pipeline.runs.registry import cv_id_for, run_id_for

    default = run_id_for(load_config("experiments/default.toml"))
    assert default == "classroom_bilstm_gn0.5_e16f6dd5"
    assert f"from {default}" in (PROJECT_ROOT / "README.md").read_text()
    raw = ["data.competition=raw", "train.epochs=40", "train.patience=8", "cv.folds=3"]
    assert cv_id_for(load_config("experiments/default.toml", raw)) == "raw_cv3_bilstm_gn0.5_3ea69424"
    # the old protocol trains its folds on other series: another CV
    assert cv_id_for(load_config("experiments/default.toml", [*raw, "cv.inner_folds=0"])) != cv_id_for(
        load_config("experiments/default.toml", raw)
    )


def test_run_ids_follow_the_declared_rules_with_no_special_case():
    """Every field is part of the result unless its metadata says NOT_RESULT; a new field is too."""
    import dataclasses

    from pipeline.config import NOT_RESULT, result_fields
    from pipeline.runs.registry import config_hash

    base = load_config()
    declared = {
        f"{section.name}.{item.name}"
        for section in dataclasses.fields(base)
        for item in dataclasses.fields(getattr(base, section.name))
        if not section.metadata.get("result", True) or not item.metadata.get("result", True)
    }
    assert {"train.verbose", "train.steps_per_execution", "cv.repeats", "paths.root", "tune.trials"} <= declared
    for key in (
        "train.verbose=2",
        "train.steps_per_execution=4",
        "cv.repeats=3",
        "tune.trials=2",
        "peers.models=['x']",
    ):
        assert config_hash(load_config(None, [key])) == config_hash(base), key
    for key in ("model.units=8", "model.pooling=average", "cv.inner_folds=0", "cv.fold=1", "data.test_noise=0.8"):
        assert config_hash(load_config(None, [key])) != config_hash(base), key

    @dataclasses.dataclass(frozen=True)
    class Section:
        kept: int = 1
        new_option: str = "off"  # a field added later, with no declaration: part of the result
        printed: int = dataclasses.field(default=0, metadata=NOT_RESULT)

    @dataclasses.dataclass(frozen=True)
    class Tree:
        section: Section = dataclasses.field(default_factory=Section)
        tool: Section = dataclasses.field(default_factory=Section, metadata=NOT_RESULT)

    assert result_fields(Tree()) == {"section": {"kept": 1, "new_option": "off"}}
