"""`har`, the console command of the installed package: the stages as subcommands, --version, config."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from pipeline.__main__ import COMMANDS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HAR = Path(sys.executable).parent / "har"  # what `pip install -e .` (make install) puts beside python


def make_recipes() -> dict[str, str]:
    """make target -> the pipeline module its recipe runs."""
    recipes, target = {}, None
    for line in (PROJECT_ROOT / "Makefile").read_text().splitlines():
        if match := re.match(r"^([a-z-]+):", line):
            target = match.group(1)
        elif target and (module := re.search(r"\$\(PY\) -m (pipeline[\w.]*)", line)):
            recipes.setdefault(target, module.group(1))
    return recipes


def test_every_subcommand_runs_the_module_of_its_make_target():
    recipes = make_recipes()
    assert {name: recipes.get(name) for name in COMMANDS} == COMMANDS
    # and every stage module a make target runs is a subcommand, under the target's name
    stages = {target: module for target, module in recipes.items() if module.startswith("pipeline.stages.")}
    assert set(stages.values()) <= set(COMMANDS.values()), stages


def test_the_console_command_gives_the_version_and_runs_a_stage(tmp_path: Path):
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    shown = subprocess.run([HAR, "--version"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.strip() == f"har {version}"
    runs = subprocess.run([HAR, "runs", "--set", f"paths.root={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert runs.returncode == 0 and runs.stdout.startswith("no runs yet"), runs
    wrong = subprocess.run([HAR, "trian"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "invalid choice: 'trian'" in wrong.stderr


def test_config_explains_every_setting_and_where_its_value_came_from():
    shown = subprocess.run(
        [sys.executable, "-m", "pipeline", "config", "--exp", "experiments/default.toml", "--set", "model.units=32"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )
    assert shown.returncode == 0, shown.stderr
    lines = {line.split(" = ")[0]: line for line in shown.stdout.splitlines()}
    assert lines["model.units"].startswith("model.units = 32  [set]  hidden units per direction")
    assert "[experiments/default.toml]" in lines["regularization.gaussian_noise"]
    assert "[default]" in lines["train.epochs"]
    # every setting carries a reason (the comment beside its field in pipeline/config.py)
    assert all(re.match(r"^\S+ = .+  \[[^]]+\]  \S", line) for line in lines.values()), [
        line for line in lines.values() if not re.match(r"^\S+ = .+  \[[^]]+\]  \S", line)
    ]
    broken = subprocess.run(
        [sys.executable, "-m", "pipeline", "config", "--set", "model.unit=3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )
    assert broken.returncode == 1 and broken.stderr.count("\n") == 1 and "model.unit" in broken.stderr


def test_the_package_declares_what_the_lock_pins():
    """pyproject's ranges (the package, its extras) admit the lock files' exact pins, and each extra
    has the lock file make installs it from (requirements-<extra>.txt)."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for lock in sorted(PROJECT_ROOT.glob("requirements*.txt")):
        for line in lock.read_text().splitlines():
            if line.split("#")[0].strip():
                requirement = Requirement(line.split("#")[0].strip())
                pins[requirement.name.lower()] = next(iter(requirement.specifier)).version
    declared = [Requirement(text) for text in project["dependencies"]] + [
        Requirement(text) for name, extra in project["optional-dependencies"].items() if name != "all" for text in extra
    ]
    for requirement in declared:
        assert requirement.name.lower() in pins, f"{requirement.name} is declared but not pinned"
        assert requirement.specifier.contains(pins[requirement.name.lower()]), (
            requirement,
            pins[requirement.name.lower()],
        )


def test_the_installed_package_brings_its_declared_requirements_and_every_extra():
    """make test's install is a fresh environment's `pip install -e .[all]` resolved against the locks
    (Makefile): this checkout is what is installed, every requirement of the core and of each extra
    is present at a version its range admits, and pip finds nothing broken in the environment."""
    import importlib.metadata
    import json

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    distribution = importlib.metadata.distribution(project["name"])
    origin = json.loads(distribution.read_text("direct_url.json"))
    assert origin["dir_info"].get("editable") and Path(origin["url"].removeprefix("file://")) == PROJECT_ROOT
    extras = set(distribution.metadata.get_all("Provides-Extra"))
    assert extras == set(project["optional-dependencies"])
    checked = set()
    for text in distribution.requires:
        requirement = Requirement(text)
        if requirement.name == project["name"]:
            continue  # `all` names the other extras
        assert requirement.marker is None or any(requirement.marker.evaluate({"extra": name}) for name in extras)
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), (text, installed)
        checked.add(requirement.name.lower())
    declared = project["dependencies"] + [text for extra in project["optional-dependencies"].values() for text in extra]
    assert checked == {Requirement(text).name.lower() for text in declared if not text.startswith(project["name"])}
    broken = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert broken.returncode == 0, broken.stdout
