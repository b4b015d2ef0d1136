"""The full tier (tests/tiers.py): a check is skipped only while every file it covers is what passed."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from tests import tiers
from tests.tiers import PROJECT_ROOT, Check

CHECK = "tests/test_gpu_check.py::test_the_gpu_check_dry_run_exercises_every_step"  # its file imports little


def test_every_check_of_the_tier_names_a_test_that_exists():
    for key, check in tiers.FULL_TIER.items():
        path, name = key.split("::")
        tree = ast.parse((PROJECT_ROOT / path).read_text())
        functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"{key}: no such test (renamed? then rename it in FULL_TIER too)"
        assert check.why


def small_project(root: Path) -> None:
    """A package of four modules, a -> b -> c and d alone, and a test running a by make."""
    for relative in tiers.EVERY_TEST_READS:
        path = root / relative.replace("*", "default")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    package = root / "pipeline"
    (package / "stages").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "stages" / "__init__.py").write_text("")
    (package / "stages" / "a.py").write_text("def main():\n    from pipeline.stages import b\n")
    (package / "stages" / "b.py").write_text("from pipeline.c import value\n")
    (package / "c.py").write_text("value = 1\n")
    (package / "d.py").write_text("value = 2\n")
    (root / "tests" / "helper.py").write_text("")
    (root / "tests" / "other.py").write_text("")
    (root / "tests" / "test_a.py").write_text("from tests import helper\n\ndef test_a():\n    pass\n")


def test_a_check_covers_what_its_modules_import_and_nothing_else(tmp_path: Path):
    small_project(tmp_path)
    check = Check("runs make a", ("pipeline.stages.a",))
    covered = {
        str(path.relative_to(tmp_path)) for path in tiers.covered_files("tests/test_a.py::test_a", check, tmp_path)
    }
    assert {"pipeline/stages/a.py", "pipeline/stages/b.py", "pipeline/c.py", "pipeline/__init__.py"} <= covered
    assert {"tests/test_a.py", "tests/helper.py", "Makefile", "experiments/default.toml"} <= covered
    assert "pipeline/d.py" not in covered and "tests/other.py" not in covered

    before = tiers.fingerprint("tests/test_a.py::test_a", check, tmp_path)
    (tmp_path / "pipeline" / "d.py").write_text("value = 3\n")
    (tmp_path / "tests" / "other.py").write_text("changed = True\n")
    assert tiers.fingerprint("tests/test_a.py::test_a", check, tmp_path) == before
    for changed in (
        "pipeline/c.py",
        "tests/helper.py",
        "Makefile",
    ):  # imported twice removed, or a file every test reads
        original = (tmp_path / changed).read_text()
        (tmp_path / changed).write_text(original + "# changed\n")
        assert tiers.fingerprint("tests/test_a.py::test_a", check, tmp_path) != before, changed
        (tmp_path / changed).write_text(original)
    assert tiers.fingerprint("tests/test_a.py::test_a", check, tmp_path) == before


def test_a_named_notebook_adds_what_its_cells_import(tmp_path: Path):
    small_project(tmp_path)
    cells = [
        {"cell_type": "markdown", "source": ["import pipeline.stages.a"]},  # text, not code
        {"cell_type": "code", "source": ["%matplotlib inline\n", "from pipeline import d\n"]},
    ]
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "n.ipynb").write_text(json.dumps({"cells": cells}))
    check = Check("executes a notebook", files=("notebooks/*.ipynb",))
    covered = {
        str(path.relative_to(tmp_path)) for path in tiers.covered_files("tests/test_a.py::test_a", check, tmp_path)
    }
    assert {"notebooks/n.ipynb", "pipeline/d.py"} <= covered and "pipeline/stages/a.py" not in covered


def test_a_named_file_that_does_not_exist_is_refused(tmp_path: Path):
    small_project(tmp_path)
    check = Check("reads a script", ("pipeline.stages.a",), ("scripts/missing.sh",))
    try:
        tiers.covered_files("tests/test_a.py::test_a", check, tmp_path)
    except FileNotFoundError as error:
        assert "scripts/missing.sh" in str(error)
    else:
        raise AssertionError("a missing covered file was accepted")


def test_a_check_is_skipped_only_on_its_recorded_fingerprint():
    current = tiers.fingerprint(CHECK, tiers.FULL_TIER[CHECK])
    assert tiers.unchanged_since_recorded_pass(CHECK, {CHECK: {"fingerprint": current, "passed": "then"}}) == "then"
    assert tiers.unchanged_since_recorded_pass(CHECK, {CHECK: {"fingerprint": "0" * 64, "passed": "then"}}) is None
    assert tiers.unchanged_since_recorded_pass(CHECK, {}) is None


def test_the_tier_is_recorded_only_when_every_check_passed():
    rerun = "tests/test_models_on_other_backends.py::test_every_augmentation_test_passes_on_another_backend"
    jax, torch = f"{rerun}[jax]", f"{rerun}[torch]"
    assert tiers.tier_result(jax, "setup", "passed") is None and tiers.tier_result(jax, "call", "passed") == "passed"
    assert tiers.tier_result(torch, "setup", "skipped") == "failed"  # one parameter skipped: not a pass
    assert tiers.tier_result(torch, "call", "failed") == "failed"
    assert tiers.tier_result("tests/test_config.py::test_x", "call", "failed") is None  # not in the tier
    every = set(tiers.FULL_TIER)
    assert tiers.complete_pass(every, set())
    assert not tiers.complete_pass(every - {CHECK}, set())  # one skipped or not collected
    assert not tiers.complete_pass(every, {CHECK})  # one parameter failed, another passed


def plan_check(record: Path, **variables: str) -> subprocess.CompletedProcess:
    """pytest on the check with --setup-plan, which runs no fixture and no test: it only shows whether
    the check would be skipped (a line "s") or run (its planned fixtures)."""
    environment = {**os.environ, "FULL_TIER_RECORD": str(record), **variables}
    if tiers.TIER_VARIABLE not in variables:
        environment.pop(tiers.TIER_VARIABLE, None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", CHECK, "-p", "no:cacheprovider", "-rs", "--setup-plan"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )


def test_make_test_skips_a_check_whose_files_passed_and_make_test_all_would_run_it(tmp_path: Path):
    record = tmp_path / "full_tier.json"
    passed = {CHECK: {"fingerprint": tiers.fingerprint(CHECK, tiers.FULL_TIER[CHECK]), "passed": "2026-12-05, at abc"}}
    record.write_text(json.dumps(passed))
    result = plan_check(record)
    assert "1 skipped" in result.stdout, result.stdout[-2000:]
    assert "unchanged since it passed (2026-12-05, at abc)" in result.stdout
    # with a file changed, or under make test-all, it is not skipped
    for stale, variables in ((True, {}), (False, {"TEST_TIER": "all"})):
        record.write_text(json.dumps({CHECK: {**passed[CHECK], "fingerprint": "0" * 64}} if stale else passed))
        planned = plan_check(record, **variables)
        assert f"{CHECK} (fixtures used" in planned.stdout, planned.stdout[-2000:]
        assert "skipped" not in planned.stdout
