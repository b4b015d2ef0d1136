"""make results: the results page and its figures, drawn from tiny reports on disk, every number the file's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.image import imread

from tests.conftest import run_make

RUN_ID = "classroom_bilstm_gn0.5_0000abcd"
STUDY = "classroom_tiny"
CV_ID = "classroom_cv3x2_bilstm_gn0.5_00000001"


def write_reports(root: Path) -> None:
    """What make peers, make evaluate and make cv-compare would have written, small."""
    peers = root / "reports" / "peers" / "classroom"
    peers.mkdir(parents=True)
    levels = ("0", "0.25", "0.5", "1")
    rows = [
        ("logistic_regression", 0, [0.95, 0.91, 0.72, 0.51], [0.9501, 0.9010, 0.7243, 0.5]),
        ("logistic_regression", 1, [0.93, 0.92, 0.88, 0.70], [0.9312, 0.9188, 0.8801, 0.6977]),
        ("quant", 1, [0.94, 0.93, 0.905, 0.62], [0.9433, 0.9299, 0.9051, 0.6021]),
        (f"recurrent: {RUN_ID}", "", [0.90, 0.90, 0.895, 0.88], [0.8990, 0.8971, 0.8930, 0.8801]),
    ]
    table = pd.DataFrame(
        [
            {
                "peer": peer,
                "noised copies": copies,
                "fit seconds": 1.5 + index,
                "fit peak GiB": 1.25,
                **{f"val@{level}": value for level, value in zip(levels, validation)},
                **{f"test@{level}": value for level, value in zip(levels, test)},
                "test file": test[2] - 0.001,
            }
            for index, (peer, copies, validation, test) in enumerate(rows)
        ]
    )
    table.to_csv(peers / "peers.csv", index=False, float_format="%.4f")
    counts = np.eye(6, dtype=int) * 30 + 1
    (peers / "confusion.json").write_text(
        json.dumps(
            {
                "classes": [1, 2, 3, 4, 5, 6],
                "file": "test",
                "peers": [
                    {"peer": peer, "noised copies": copies, "counts": (counts + index).tolist()}
                    for index, (peer, copies, *_) in enumerate(rows[:3])
                ],
            }
        )
    )
    evaluation = root / "reports" / RUN_ID
    evaluation.mkdir(parents=True)
    (evaluation / "evaluation.json").write_text(json.dumps({"confusion_matrix": (counts * 2).tolist()}))
    for name, a, b, low, high, verdict in (
        ("peer-quant+copies__classroom_cv_x", "peer:quant+copies", "classroom_cv_x", 0.00412345, 0.031, "A ahead"),
        ("classroom_cv_y__classroom_cv_x", "classroom_cv_y", "classroom_cv_x", -0.012, 0.009, "not separated"),
    ):
        folder = root / "reports" / "cv_compare" / name
        folder.mkdir(parents=True)
        a_scores, b_scores = [0.91, 0.93, 0.90, 0.94, 0.92], [0.90, 0.91, 0.89, 0.92, 0.90]
        record = {
            "a": a, "b": b, "a_scores": a_scores, "b_scores": b_scores,
            "differences": list(np.subtract(a_scores, b_scores)), "mean": (low + high) / 2, "low": low, "high": high,
            "verdict": verdict,
        }  # fmt: skip
        (folder / "comparison.json").write_text(json.dumps(record))
    write_study(root)
    for name, experiment in ((CV_ID, "default"), ("classroom_cv3_bilstm_gn0.5_00000002", "tune:classroom_tiny")):
        folder = root / "runs" / name
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"run_id": name, "kind": "cv", "experiment": experiment}))
        selection = {
            "definition": {"protocol": "nested: chosen on an inner fold of the training part"},
            "score": 0.8960347125370719,
            "std": 0.03176613345452086,
            "folds": [0.83, 0.92, 0.92, 0.87, 0.93, 0.88],
        }
        (folder / "metrics.json").write_text(json.dumps({"selection": selection}))


def write_study(root: Path) -> None:
    """A tiny Optuna study where `make tune` keeps it: three completed trials and a pruned one."""
    import optuna

    (root / "runs" / "tune").mkdir(parents=True)
    study = optuna.create_study(
        study_name=STUDY, storage=f"sqlite:///{root / 'runs' / 'tune' / STUDY}.db", direction="maximize"
    )

    def objective(trial: optuna.Trial) -> float:
        noise, units = trial.suggest_float("noise", 0.1, 1.0), trial.suggest_categorical("units", [32, 64])
        if trial.number == 3:
            trial.report(0.5, step=1)  # a pruned trial keeps the score it was stopped at: not a CV score
            raise optuna.TrialPruned()
        return 0.8 + 0.1 * noise - units / 10_000

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=4)


def test_make_results_draws_every_figure_and_each_number_is_its_files(tmp_path: Path):
    write_reports(tmp_path)
    result = run_make("results", f"SET=paths.root={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    page = (tmp_path / "docs" / "results.md").read_text()
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", page)
    drawn = [
        "confusion_classroom",
        "folds",
        "noise_classroom",
        "paired",
        f"tune_{STUDY}_history",
        f"tune_{STUDY}_importances",
    ]
    assert sorted(figures) == [f"results/{name}.png" for name in drawn]
    for figure in figures:
        assert imread(tmp_path / "docs" / figure).shape[0] > 100  # a real PNG, drawn
    # the peers' table: every cell equals peers.csv's, row by row
    peers = pd.read_csv(tmp_path / "reports" / "peers" / "classroom" / "peers.csv")
    table_lines = [line for line in page.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in table_lines[0].strip("|").split("|")]
    shown = [[cell.strip() for cell in line.strip("|").split("|")] for line in table_lines[1 : 1 + len(peers)]]
    for row, cells in zip(peers.to_dict("records"), shown):
        for column, cell in zip(header, cells):
            value = row[column]
            if isinstance(value, float) and not np.isnan(value):
                assert float(cell) == value, (column, cell, value)
            else:
                assert cell == ("" if pd.isna(value) else str(value)), (column, cell, value)
    # the comparisons' table: each mean and interval is its comparison.json's
    for name in ("peer-quant+copies__classroom_cv_x", "classroom_cv_y__classroom_cv_x"):
        record = json.loads((tmp_path / "reports" / "cv_compare" / name / "comparison.json").read_text())
        line = next(line for line in table_lines if line.startswith(f"| {record['a']} | {record['b']} |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert [float(cells[3]), float(cells[4]), float(cells[5])] == [
            round(record["mean"], 4),
            round(record["low"], 4),
            round(record["high"], 4),
        ]
        assert cells[6] == record["verdict"] and int(cells[2]) == 5
    # the cross-validations: the CV's score and spread, to 4 decimals; the tuner's trial CVs left to their study
    cv_line = next(line for line in table_lines if line.startswith(f"| {CV_ID} |"))
    assert [cell.strip() for cell in cv_line.strip("|").split("|")] == [
        "classroom_cv3x2_bilstm_gn0.5_00000001",
        "default",
        "6",
        "nested",
        "0.896",
        "0.0318",
    ]
    assert "classroom_cv3_bilstm_gn0.5_00000002" not in page
    # the study's table: each trial's state, score and parameters are the storage's
    import optuna

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / 'runs' / 'tune' / STUDY}.db")
    for trial in study.trials:
        line = next(line for line in table_lines if line.startswith(f"| {trial.number} | "))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1] == trial.state.name.lower()
        complete = trial.state == optuna.trial.TrialState.COMPLETE
        assert cells[2] == (str(float(f"{trial.value:.4g}")) if complete else "")
        assert [float(cells[3]), int(cells[4])] == [float(f"{trial.params['noise']:.4g}"), trial.params["units"]]
    # the strongest peer is chosen on validation at the competition's noise (QUANT with its copy: 0.905),
    # not on the test columns
    assert "chosen on validation at the competition's noise (val@0.5): quant + 1 noised copy." in page


def test_with_nothing_to_draw_it_says_what_writes_the_reports(tmp_path: Path):
    result = run_make("results", f"SET=paths.root={tmp_path}")
    assert result.returncode != 0 and "make peers" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "docs").exists()


def test_make_noise_level_estimates_the_test_file_and_measures_itself_against_the_truth(prepared_root: Path):
    """On classroom's test file (white noise at 0.5): each series' estimated level against the true
    level of its noise, and the test subjects noised at each level of train.noise_levels."""
    result = run_make("noise-level", f"SET=paths.root={prepared_root}")
    assert result.returncode == 0, result.stderr[-2000:]
    folder = prepared_root / "reports" / "noise_level" / "classroom"
    report = json.loads((folder / "noise_level.json").read_text())
    file = report["test file"]
    assert abs(file["true"]["median"] - 0.5) < 0.02  # the organizer's noise, measured from the clean copy
    assert abs(file["median"] - file["true"]["median"]) < 0.1 and file["mean absolute error"] < 0.2
    levels = {row["level"]: row for row in report["test subjects"]}
    assert sorted(levels) == [0.0, 0.25, 0.5, 1.0]
    assert levels[0.0]["mean"] < 0.05 and levels[0.25]["mean"] < levels[0.5]["mean"] < levels[1.0]["mean"]
    assert f"median {file['median']:.3f}" in (folder / "noise_level.md").read_text() and "true level" in result.stdout
