"""The house: imports run one way through the package's layers, and the docs' links resolve."""

from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import pipeline
from tests.code_graph import import_graph

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def layer_of(module: str) -> str:
    """pipeline.config -> shared, pipeline.stages.train -> stages, pipeline.models -> models."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in pipeline.LAYERS:
        return parts[1]
    return "shared"


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, module) of every pipeline import in a file, function-level imports included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("pipeline")]
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("pipeline")
        ):
            # `from pipeline import models` imports the subpackage pipeline.models
            found += [
                (node.lineno, f"pipeline.{alias.name}" if node.module == "pipeline" else node.module)
                for alias in node.names
            ]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; this project imports absolutely")
    return found


def layer_violations(package_root: Path) -> list[str]:
    """Every import from a later layer than the importing module's, as 'file:line: a -> b'."""
    order = {name: index for index, name in enumerate(pipeline.LAYERS)}
    violations = []
    for path in sorted(package_root.rglob("*.py")):
        relative = path.relative_to(package_root.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        own = layer_of(module)
        for line, target in imported_modules(path, module):
            if order[layer_of(target)] > order[own]:
                violations.append(
                    f"{path.relative_to(package_root.parent)}:{line}: {own} imports {layer_of(target)} ({target})"
                )
    return violations


def test_no_module_imports_from_a_later_layer():
    assert layer_violations(PROJECT_ROOT / "pipeline") == []


def test_a_stage_importing_a_study_is_reported(tmp_path):
    package = tmp_path / "pipeline"
    (package / "stages").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "stages" / "train.py").write_text("def f():\n    from pipeline.studies.tune import study\n")
    (package / "stages" / "cv.py").write_text("from pipeline.stages import train\nfrom pipeline import config\n")
    assert layer_violations(package) == ["pipeline/stages/train.py:2: stages imports studies (pipeline.studies.tune)"]


def import_cycle(package_root: Path) -> list[str]:
    """One circle of module imports (function-level imports included), or [] when there is none.
    `from pipeline.stages import train` counts as importing the module pipeline.stages.train."""
    try:
        graphlib.TopologicalSorter(import_graph(package_root)).prepare()
    except graphlib.CycleError as error:
        return list(error.args[1])
    return []


def test_no_import_circle():
    assert import_cycle(PROJECT_ROOT / "pipeline") == []


def test_an_import_circle_through_a_function_level_import_is_reported(tmp_path):
    package = tmp_path / "pipeline"
    (package / "stages").mkdir(parents=True)
    for name in ("__init__.py", "stages/__init__.py"):
        (package / name).write_text("")
    (package / "stages" / "train.py").write_text("def f():\n    from pipeline.stages.cv import cross_validate\n")
    (package / "stages" / "cv.py").write_text("from pipeline.stages import train\n")
    assert sorted(set(import_cycle(package))) == ["pipeline.stages.cv", "pipeline.stages.train"]
    (package / "stages" / "train.py").write_text("from pipeline import config\n")
    assert import_cycle(package) == []


def test_every_layer_named_in_the_order_exists_as_a_package():
    for name in pipeline.LAYERS[1:]:
        assert (PROJECT_ROOT / "pipeline" / name / "__init__.py").is_file(), name
    # and no package hides outside the order
    packages = {path.parent.name for path in (PROJECT_ROOT / "pipeline").glob("*/__init__.py")}
    assert packages == set(pipeline.LAYERS[1:])


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def broken_links(markdown_files: list[Path]) -> list[str]:
    """Relative links and image paths that point at no file (anchors and web addresses are skipped)."""
    broken = []
    for path in markdown_files:
        for target in LINK.findall(path.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            file_part = target.split("#", 1)[0]
            if file_part and not (path.parent / file_part).exists():
                broken.append(
                    f"{path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path}: {target}"
                )
    return broken


def test_every_relative_link_in_the_readme_and_docs_resolves():
    files = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").rglob("*.md"))]
    assert broken_links(files) == []


def test_a_broken_link_is_reported(tmp_path):
    (tmp_path / "figure.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](figure.png) ![img](figure.png) [web](https://example.org) [anchor](#top) [gone](missing.md#part)\n"
    )
    assert [line.split(": ", 1)[1] for line in broken_links([page])] == ["missing.md#part"]


def subprocess_limits(folder: Path) -> dict[str, int]:
    """Every `timeout=<seconds>` a test file gives a subprocess or a wait, by file and line."""
    return {
        f"{path.name}:{number}": int(found.group(1))
        for path in sorted(folder.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if (found := re.search(r"\btimeout=(\d+)", line))
    }


def test_no_test_gives_its_subprocesses_longer_than_the_per_test_timeout(tmp_path):
    """pytest-timeout kills a test without its subprocess's output: their own limits must fire first."""
    import tomllib

    per_test = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["timeout"]
    limits = subprocess_limits(PROJECT_ROOT / "tests")
    assert limits and max(limits.values()) < per_test, {k: v for k, v in limits.items() if v >= per_test}
    (tmp_path / "test_x.py").write_text("run(timeout=5)\nrun(timeout=1200)\n")
    assert subprocess_limits(tmp_path) == {"test_x.py:1": 5, "test_x.py:2": 1200}


PACKAGES = pipeline.LAYERS[1:]


def code_map(text: str) -> dict[str, set[str]]:
    """The module names a code map (a `pipeline/` tree in the README or docs/design.md) lists per package."""
    rows = {}
    for line in text.splitlines():
        found = re.match(rf"\s+({'|'.join(PACKAGES)})/\s+((?:\w+\.py\s+)*\w+\.py)", line)
        if found:
            rows[found.group(1)] = set(found.group(2).split())
    return rows


def make_targets_running_the_package(makefile: str) -> set[str]:
    """The make targets whose recipe runs a module of the package (python -m pipeline....)."""
    targets, current = set(), None
    for line in makefile.splitlines():
        header = re.match(r"^([a-z][a-z-]*):(?!=)", line)
        if header:
            current = header.group(1)
        elif current and line.startswith("\t") and "-m pipeline." in line:
            targets.add(current)
    return targets


def test_the_code_maps_list_every_module_and_the_stage_pages_every_make_target():
    modules = {
        package: {path.name for path in (PROJECT_ROOT / "pipeline" / package).glob("*.py")}
        - {"__init__.py", "__main__.py"}
        for package in PACKAGES
    }
    for page in ("README.md", "docs/design.md"):
        assert code_map((PROJECT_ROOT / page).read_text()) == modules, page
    stages_docstring = ast.get_docstring(ast.parse((PROJECT_ROOT / "pipeline" / "stages" / "__init__.py").read_text()))
    assert {name for name in modules["stages"] if name not in stages_docstring} == set()
    stages_page = (PROJECT_ROOT / "docs" / "stages.md").read_text()
    targets = make_targets_running_the_package((PROJECT_ROOT / "Makefile").read_text())
    assert {"train", "cv", "ensemble", "ui"} <= targets
    # stages/ holds make targets only: each module is run by one and has its main()
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    for name in modules["stages"]:
        source = (PROJECT_ROOT / "pipeline" / "stages" / name).read_text()
        assert f"-m pipeline.stages.{name[:-3]}" in makefile and "\ndef main(" in source, name
    assert {target for target in targets if f"`make {target}" not in stages_page} == set()
    # the checks find what is missing
    assert code_map("pipeline/\n  stages/    train.py cv.py\n") == {"stages": {"train.py", "cv.py"}}
    assert make_targets_running_the_package("x: y ## z\n\t$(PY) -m pipeline.stages.x\nz:\n\techo\n") == {"x"}


RUN_FILES = ("config.json", "run.json", "environment.json", "history.csv", "checkpoint.keras", "model.keras")
RUN_FILES += ("split.json", "pruned.json", "metrics.json")


def run_file_names_spelled(package_root: Path, owner: str = "runs/folder.py") -> list[str]:
    """Where a module other than the run-folder type spells a run file's name in code (docstrings,
    which describe the files, are not code), as 'file:line: name'."""
    found = []
    for path in sorted(package_root.rglob("*.py")):
        if path.relative_to(package_root).as_posix() == owner:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found += [
                    f"{path.relative_to(package_root)}:{node.lineno}: {name}"
                    for name in RUN_FILES
                    if name in node.value
                ]
    return found


def test_no_module_but_the_run_folder_type_names_a_run_file(tmp_path):
    assert run_file_names_spelled(PROJECT_ROOT / "pipeline") == []
    # the check finds a name in code, and leaves docstrings alone
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "folder.py").write_text('METRICS = "metrics.json"\n')
    (tmp_path / "a.py").write_text(
        '"""Reads metrics.json."""\n\ndef f(d):\n    """its history.csv"""\n    return d / f"x/{d}/model.keras"\n'
    )
    assert run_file_names_spelled(tmp_path) == ["a.py:5: model.keras"]
