"""The notebooks run headless with a tiny configuration injected, and show figures."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest

from tests.conftest import ATTENTION_RUN_OVERRIDES, NOTEBOOK_TRAIN, PROJECT_ROOT

pytestmark = pytest.mark.slow
TINY_TRAIN = NOTEBOOK_TRAIN


def execute(name: str, output: Path, **parameters) -> nbformat.NotebookNode:
    papermill.execute_notebook(
        str(PROJECT_ROOT / "notebooks" / name),
        str(output),
        parameters=parameters,
        cwd=str(PROJECT_ROOT),
        kernel_name="python3",
        progress_bar=False,
    )
    return nbformat.read(output, as_version=4)


def outputs(notebook: nbformat.NotebookNode) -> tuple[int, str]:
    """(number of PNG figures, all text output) of an executed notebook."""
    figures, text = 0, []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", output
            figures += "image/png" in output.get("data", {})
            text.append(output.get("text", "") + output.get("data", {}).get("text/plain", ""))
    return figures, "\n".join(text)


def test_explore_data(prepared_root: Path, tmp_path: Path):
    figures, _text = outputs(execute("01-explore-data.ipynb", tmp_path / "01.ipynb", root=str(prepared_root)))
    assert figures >= 4


def test_compare_regularizers_states_a_conclusion_from_its_numbers(prepared_root: Path, tmp_path: Path):
    overrides = ["compare.cells=['none','gaussian_noise']", "compare.models=['bilstm']", "compare.seeds=1", *TINY_TRAIN]
    notebook = execute(
        "02-compare-regularizers.ipynb",
        tmp_path / "02.ipynb",
        root=str(prepared_root),
        run_compare_if_missing=True,
        compare_overrides=overrides,
    )
    figures, text = outputs(notebook)
    assert figures >= 1
    assert "2 comparison runs" in text and "bilstm: chosen on validation at test noise 0.5:" in text
    assert "reported on the test subjects:" in text
    # The conclusion names the cell with the higher validation score, whatever the test columns say.
    runs_table = pd.read_csv(prepared_root / "reports" / "compare" / "classroom" / "compare.csv")
    cells = runs_table[runs_table["model"] == "bilstm"].set_index("cell")["val@0.5"]
    assert f"chosen on validation at test noise 0.5: '{cells.idxmax()}'" in text
    assert "baseline logistic_regression:" in text and "baseline random_forest:" in text
    # The session's project had no comparison runs, so the notebook ran the grid, baselines included.
    assert set(runs_table[runs_table["model"] == "baselines"]["cell"]) == {"logistic_regression", "random_forest"}
    summary = (prepared_root / "reports" / "compare" / "classroom" / "summary.md").read_text()
    assert "ranked within each model by validation accuracy" in summary
    assert "One seed per cell: no paired comparison" in summary  # compare.seeds=1 here
    assert (prepared_root / "reports" / "compare" / "classroom" / "compare.png").is_file()


def test_attention(prepared_root: Path, attention_run: Path, tmp_path: Path):
    """The notebook's run is the session's attention run (tests/conftest.py), so it reuses it."""
    notebook = execute(
        "03-attention.ipynb",
        tmp_path / "03.ipynb",
        root=str(prepared_root),
        competition="classroom",
        train_overrides=ATTENTION_RUN_OVERRIDES[2:],
    )
    figures, text = outputs(notebook)
    assert figures >= 2 and "relative entropy" in text
    assert f"{attention_run}: already trained with this config" in text  # the run reused, not trained twice


def test_compare_regularizers_reads_runs_and_trains_the_grid_only_when_asked(tmp_path: Path):
    """Without comparison runs and without run_compare_if_missing, it stops in one sentence saying how
    to make them, instead of training for 39 minutes."""
    with pytest.raises(papermill.PapermillExecutionError, match=r"no comparison runs of classroom in .*make compare"):
        execute("02-compare-regularizers.ipynb", tmp_path / "02.ipynb", root=str(tmp_path))
    assert not (tmp_path / "runs").exists()  # nothing was trained


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_bptt_shows_the_three_figures_with_measured_sentences(
    backend: str, prepared_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("KERAS_BACKEND", backend)  # the kernel inherits it: the notebook imports no backend itself
    notebook = execute(
        "04-bptt.ipynb",
        tmp_path / "04.ipynb",
        root=str(prepared_root),
        windows=16,
        hidden=4,
        clip_epochs=1,
        train_overrides=[
            *TINY_TRAIN,
            "train.max_train_series=64",
            "train.epochs=1",
            "model.units=4",
            "model.layers=1",
            "train.noise_levels=[0.5]",
        ],
    )
    figures, text = outputs(notebook)
    assert figures == 3
    # (a) at spectral radius 0.5 the gradient 127 steps back is at most 0.5^127 of its size at the loss (tanh' <= 1)
    vanished = float(re.search(r"spectral radius 0.5: 127 steps back the gradient is (\S+) x", text).group(1))
    assert 0 < vanished < 1e-30
    assert "LSTM (4 units, untrained): 127 steps back" in text
    # (b) a run without and a run with clipping, each with its loss curve
    losses = dict(re.findall(r"train.clipnorm=(\S+): loss (\S+) after epoch 1", text))
    assert set(losses) == {"0", "1"}
    # (c) the three trained models, each with its reach
    for name in ("lstm", "bilstm", "deep_transition"):
        assert re.search(rf"^{name}: the first step's gradient is \S+ of the largest", text, re.M), name


def test_peers_under_noise_states_its_numbers_from_the_reports(tmp_path: Path):
    """Notebook 05 draws the results page's figures from reports on disk and says, level by level,
    which peer validation chose and how it compares with the recurrent run on the test subjects."""
    from tests.test_results import write_reports

    write_reports(tmp_path)
    figures, text = outputs(execute("05-peers-under-noise.ipynb", tmp_path / "05.ipynb", root=str(tmp_path)))
    assert figures == 3  # accuracy against noise, the two confusions, the paired comparisons
    table = pd.read_csv(tmp_path / "reports" / "peers" / "classroom" / "peers.csv")
    recurrent = table[table["peer"].str.startswith("recurrent: ")].iloc[0]
    peers = table[~table["peer"].str.startswith("recurrent: ")]
    chosen = peers.loc[peers["val@0.5"].idxmax()]  # chosen on validation, whatever the test columns say
    assert chosen["peer"] == "quant" and peers["test@0.5"].max() == chosen["test@0.5"]  # the fixture's premise
    assert (
        f"at test noise 0.5: the peer chosen on validation is quant + 1 noised copy, {chosen['test@0.5']:.3f} on the "
        f"test subjects, against {recurrent['test@0.5']:.3f} for the recurrent run" in text
    )
    # at 1.0 validation chooses logistic regression with its copy, not QUANT (the better test score at 0)
    assert "at test noise 1: the peer chosen on validation is logistic_regression + 1 noised copy" in text
    assert (
        "logistic_regression: validation at 0.5 0.720 fitted on clean series, 0.880 with noised copies (+0.160)" in text
    )


def test_make_notebooks_writes_outputs_in_place_only_when_every_cell_ran(tmp_path: Path):
    """make notebooks' runner on a folder of two small notebooks: the one that runs gets its outputs
    and its code's digest; the one that fails is left as it was."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from pipeline.studies.notebooks import code_digest, run

    folder = tmp_path / "notebooks"
    folder.mkdir()
    good = new_notebook(
        cells=[new_code_cell("%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nprint('drawn')")]
    )
    bad = new_notebook(cells=[new_code_cell("print('before')"), new_code_cell("raise ValueError('broken cell')")])
    for name, notebook in (("01-good.ipynb", good), ("02-bad.ipynb", bad)):
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, folder / name)
    before = (folder / "02-bad.ipynb").read_text()
    run(["01"], folder)
    executed = nbformat.read(folder / "01-good.ipynb", as_version=4)
    figures, text = outputs(executed)
    assert figures == 1 and "drawn" in text
    assert executed.metadata["har"]["code_sha256"] == code_digest(executed)
    with pytest.raises(papermill.PapermillExecutionError, match="broken cell"):
        run(["02"], folder)
    assert (folder / "02-bad.ipynb").read_text() == before
    assert sorted(path.name for path in folder.iterdir()) == ["01-good.ipynb", "02-bad.ipynb"]  # no temp left
