"""Reports: the numbers of `make evaluate` match a direct computation on the saved predictions."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from pipeline.data.competition import load_competition
from pipeline.models import baselines
from tests.conftest import run_make

PNG = b"\x89PNG\r\n\x1a\n"


def test_series_statistics_are_the_documented_features():
    series = np.arange(2 * 4 * 3, dtype=float).reshape(2, 4, 3)
    features = baselines.series_statistics(series)
    assert features.shape == (2, 18)
    np.testing.assert_allclose(features[0, :3], series[0].mean(0))
    np.testing.assert_allclose(features[0, 12:15], series[0, 0])
    np.testing.assert_allclose(features[0, 15:18], series[0, -1])


def test_baselines_learn_a_separable_problem():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    series = rng.normal(size=(300, 5, 4))
    series[np.arange(300), :, labels] += 2
    for model in baselines.fit_baselines(series[:200], labels[:200], 3).values():
        probabilities = model.predict(series[200:])
        assert probabilities.shape == (100, 3)
        assert (probabilities.argmax(1) == labels[200:]).mean() > 0.9


@pytest.mark.slow
def test_evaluate_report_matches_the_saved_predictions(tiny_run: Path, prepared_root: Path):
    result = run_make("evaluate", f"RUN={tiny_run.name}", f"SET=paths.root={prepared_root}")
    assert result.returncode == 0, result.stderr
    report = prepared_root / "reports" / tiny_run.name
    evaluation = json.loads((report / "evaluation.json").read_text())
    predictions = pd.read_csv(report / "predictions.csv", dtype={"file": str})
    truth, predicted = predictions["true_activity"], predictions["predicted_activity"]
    assert evaluation["accuracy"] == pytest.approx((truth == predicted).mean())
    # The confusion matrix counted by hand (rows: true activity), and the per-class scores from it by
    # their definitions, not by the scikit-learn calls evaluate.py makes.
    counts = np.zeros((6, 6), dtype=int)
    np.add.at(counts, (truth.to_numpy() - 1, predicted.to_numpy() - 1), 1)
    assert evaluation["confusion_matrix"] == counts.tolist()
    hits = np.diag(counts)
    precision = np.divide(hits, counts.sum(0), out=np.zeros(6), where=counts.sum(0) > 0)
    recall = hits / counts.sum(1)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(6), where=precision + recall > 0)
    per_class = pd.read_csv(report / "per_class.csv")
    np.testing.assert_allclose(
        per_class[["precision", "recall", "f1"]].to_numpy(), np.column_stack([precision, recall, f1]), atol=1e-9
    )
    # The scored series are the competition's own test file, with the answer key's labels: the
    # accuracy recomputed from the saved model, the test file and the answer key is the report's.
    solution = pd.read_csv(
        prepared_root / "data" / "private" / "classroom" / "solution.csv", dtype={"file": str}
    ).set_index("file")
    assert (solution.loc[predictions["file"], "activity"].to_numpy() == truth.to_numpy()).all()
    competition = load_competition(prepared_root / "data" / "processed" / "classroom")
    model = keras.models.load_model(tiny_run / "model.keras")
    recomputed = np.array([1, 2, 3, 4, 5, 6])[model.predict(competition.test.series, verbose=0).argmax(-1)]
    assert evaluation["accuracy"] == pytest.approx(
        (recomputed == solution.loc[competition.test.ids, "activity"].to_numpy()).mean(), abs=1e-12
    )
    curve = pd.read_csv(report / "noise_curve.csv")
    assert set(curve["predictor"]) == {"bilstm", "logistic_regression", "random_forest"}
    assert curve["level"].min() == 0 and curve["level"].max() == 1.5
    assert curve[curve["level"] > 0].groupby(["predictor", "level"]).size().min() == 3  # several noise draws
    for figure in ("confusion_matrix.png", "learning_curves.png", "noise_curve.png", "gradient_through_time.png"):
        assert (report / figure).read_bytes()[:8] == PNG and (report / figure).stat().st_size > 10_000
    text = (report / "report.md").read_text()
    assert (
        tiny_run.name in text
        and "![noise curve](noise_curve.png)" in text
        and "regularization.gaussian_noise=0.5" in text
    )

    # Again with the same run and data: nothing is rewritten. A report made from other inputs is.
    before = (report / "report.md").stat().st_mtime_ns
    again = run_make("evaluate", f"RUN={tiny_run.name}", f"SET=paths.root={prepared_root}")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stderr
    assert (report / "report.md").stat().st_mtime_ns == before
    (report / "evaluation.json").write_text(json.dumps({**evaluation, "key": "made from other inputs"}))
    rewritten = run_make("evaluate", f"RUN={tiny_run.name}", f"SET=paths.root={prepared_root}")
    assert (
        rewritten.returncode == 0
        and "wrote" in rewritten.stdout
        and json.loads((report / "evaluation.json").read_text())["key"] == evaluation["key"]
    )


@pytest.mark.slow
def test_attention_runs_get_attention_maps(prepared_root: Path, attention_run: Path):
    result = run_make("evaluate", f"RUN={attention_run.name}", f"SET=paths.root={prepared_root}")
    assert result.returncode == 0, result.stderr
    report = prepared_root / "reports" / attention_run.name
    assert (report / "attention_maps.png").read_bytes()[:8] == PNG
    assert "attention_maps.png" in json.loads((report / "evaluation.json").read_text())["figures"]
