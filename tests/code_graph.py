"""The package's import graph read from its source (ast, no import run): the layering test
(tests/test_layout.py) looks for circles in it, the full tier (tests/tiers.py) follows it to the files
a test covers."""

from __future__ import annotations

import ast
import json
from pathlib import Path


def package_modules(package_root: Path) -> dict[str, Path]:
    """{'pipeline.stages.train': path, 'pipeline.stages': path of its __init__.py, ...}."""
    modules = {}
    for path in sorted(package_root.rglob("*.py")):
        relative = path.relative_to(package_root.parent).with_suffix("")
        modules[".".join(relative.parts).removesuffix(".__init__")] = path
    return modules


def source_of(path: Path) -> str:
    """A Python file's text, or a notebook's code cells (IPython's %magic and !shell lines left out)."""
    if path.suffix != ".ipynb":
        return path.read_text()
    cells = [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]
    lines = [line for cell in cells for line in "".join(cell["source"]).splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


def imports_in(path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` a file (or a notebook) imports, function-level imports included.
    `from pipeline.stages import train` counts as importing the module pipeline.stages.train."""
    targets = set()
    for node in ast.walk(ast.parse(source_of(path), str(path))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                targets.add(submodule if submodule in modules else node.module)
    return {target for target in targets if target in modules}


def import_graph(package_root: Path) -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports (itself left out)."""
    modules = package_modules(package_root)
    return {module: imports_in(path, modules) - {module} for module, path in modules.items()}


def imported_closure(entries: set[str], graph: dict[str, set[str]]) -> set[str]:
    """Every module that importing `entries` runs: what they import, transitively, and the packages
    (`__init__.py`) above each."""
    seen: set[str] = set()
    waiting = list(entries)
    while waiting:
        module = waiting.pop()
        if module in seen or module not in graph:
            continue
        seen.add(module)
        waiting += graph[module]
        parts = module.split(".")
        waiting += [".".join(parts[:length]) for length in range(1, len(parts))]
    return seen
