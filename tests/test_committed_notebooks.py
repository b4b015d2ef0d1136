"""The committed notebooks show what `make notebooks` drew: every cell executed at the default
budget, by the code beside it, with figures a reader on the web sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.studies.notebooks import FOLDER, code_digest


@pytest.mark.parametrize("path", sorted(FOLDER.glob("*.ipynb")), ids=lambda path: path.name)
def test_a_committed_notebook_carries_the_outputs_of_its_own_code(path: Path):
    notebook = json.loads(path.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    digest = notebook["metadata"].get("har", {}).get("code_sha256")
    assert digest == code_digest(notebook), f"{path.name}: its code changed since `make notebooks` ran it"
    counts = [cell["execution_count"] for cell in code]
    assert all(counts) and counts == sorted(counts), f"{path.name}: not every cell ran, top to bottom"
    outputs = [output for cell in code for output in cell["outputs"]]
    assert not [output for output in outputs if output["output_type"] == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs), f"{path.name}: no figure"
    # the default budget: papermill injected no parameters
    assert notebook["metadata"]["papermill"]["parameters"] == {}
    assert not [cell for cell in code if "injected-parameters" in cell["metadata"].get("tags", [])]
