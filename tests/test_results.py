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
        ("peer-quant+copies__cv_x", "peer:quant+copies", "cv_x", 0.004, 0.031, "A ahead"),
        ("cv_y__cv_x", "cv_y", "cv_x", -0.012, 0.009, "not separated"),
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


def test_make_results_draws_every_figure_and_each_number_is_its_files(tmp_path: Path):
    write_reports(tmp_path)
    result = run_make("results", f"SET=paths.root={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    folder = tmp_path / "reports" / "results"
    page = (folder / "results.md").read_text()
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", page)
    assert sorted(figures) == ["confusion_classroom.png", "folds.png", "noise_classroom.png", "paired.png"]
    for figure in figures:
        assert imread(folder / figure).shape[0] > 100  # a real PNG, drawn
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
    for name in ("peer-quant+copies__cv_x", "cv_y__cv_x"):
        record = json.loads((tmp_path / "reports" / "cv_compare" / name / "comparison.json").read_text())
        line = next(line for line in table_lines if line.startswith(f"| {record['a']} | {record['b']} |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert [float(cells[3]), float(cells[4]), float(cells[5])] == [record["mean"], record["low"], record["high"]]
        assert cells[6] == record["verdict"] and int(cells[2]) == 5
    # the strongest peer is chosen on validation at the competition's noise (QUANT with its copy: 0.905),
    # not on the test columns
    assert "chosen on validation at the competition's noise (val@0.5): quant + 1 noised copy." in page


def test_with_nothing_to_draw_it_says_what_writes_the_reports(tmp_path: Path):
    result = run_make("results", f"SET=paths.root={tmp_path}")
    assert result.returncode != 0 and "make peers" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "reports" / "results").exists()
