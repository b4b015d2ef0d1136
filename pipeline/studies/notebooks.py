"""`make notebooks [NOTEBOOK=02]`: execute the notebooks headless at their default budget, in place.

Each notebook in notebooks/ runs top to bottom with papermill, with no parameter injected (so at
the budget its first cell states), reading the runs and reports on disk. The executed copy, outputs
included, replaces the notebook only when every cell ran (written to a temp file, then renamed), so
the committed notebooks show their figures and tables to a reader on the web. Each one carries the
SHA-256 of its code cells in its metadata (`har.code_sha256`): tests/test_committed_notebooks.py
checks that the committed outputs came from the code beside them, so a notebook edited without
`make notebooks` fails the suite. The tests themselves execute the notebooks on a tiny budget into a
scratch folder (tests/test_notebooks.py) and never touch these copies.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

from pipeline.cli import run_stage
from pipeline.errors import DataError
from pipeline.files import atomic_file
from pipeline.log import log
from pipeline.progress import Progress, duration

FOLDER = Path(__file__).resolve().parents[2] / "notebooks"


def code_digest(notebook: dict) -> str:
    """The SHA-256 of a notebook's code cells (their sources, in order): what its outputs came from."""
    sources = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    return hashlib.sha256("\n\0\n".join(sources).encode()).hexdigest()


def chosen(folder: Path, names: list[str]) -> list[Path]:
    """The notebooks to run: all of them, or those whose file name starts with one of `names`."""
    notebooks = sorted(folder.glob("*.ipynb"))
    if not names:
        return notebooks
    picked = [path for path in notebooks if any(path.name.startswith(name) for name in names)]
    missing = [name for name in names if not any(path.name.startswith(name) for path in notebooks)]
    if missing:
        raise DataError(
            f"{folder}: no notebook named {', '.join(missing)} (there are {', '.join(p.name for p in notebooks)})"
        )
    return picked


def execute(path: Path, root: Path) -> None:
    """Run one notebook in place: the executed copy replaces it only when every cell ran."""
    import nbformat
    import papermill

    with tempfile.TemporaryDirectory() as scratch, atomic_file(path) as temp:
        executed = Path(scratch) / path.name
        papermill.execute_notebook(
            str(path), str(executed), cwd=str(root), kernel_name="python3", progress_bar=False, log_output=False
        )
        notebook = nbformat.read(executed, as_version=4)
        notebook.metadata["har"] = {"code_sha256": code_digest(notebook)}
        nbformat.write(notebook, temp)
        temp.chmod(0o644)


def run(names: list[str], folder: Path = FOLDER) -> list[Path]:
    notebooks = chosen(folder, names)
    progress = Progress(len(notebooks))
    for path in notebooks:
        progress.step(f"{path.name}: executing ...")
        started = time.perf_counter()
        execute(path, folder.parent)
        log.info(f"    {path.name} executed in {duration(time.perf_counter() - started)}, outputs written into it")
    return notebooks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.studies.notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to run, by the start of their file name (default: all)")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args.names))


if __name__ == "__main__":
    sys.exit(main())
