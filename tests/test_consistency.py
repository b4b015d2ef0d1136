"""Noise-consistency training (pipeline.models.consistency): the twin layer, the Jensen-Shannon term,
the loss on both views, and a model that trains, saves and predicts as a plain one. Backend-agnostic:
tests/test_models_on_other_backends.py runs this file again on JAX and PyTorch."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops
from scipy.spatial.distance import jensenshannon

from pipeline import models
from pipeline.config import load_config
from pipeline.models.consistency import TWIN, NoisedTwin, jensen_shannon
from pipeline.runs import fitting


def as_numpy(tensor) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(tensor))


def test_the_jensen_shannon_term_is_scipys_divergence():
    rng = np.random.default_rng(0)
    first, second = rng.dirichlet(np.ones(4), 6), rng.dirichlet(np.ones(4), 6)
    expected = np.mean([jensenshannon(p, q) ** 2 for p, q in zip(first, second)])  # scipy gives its square root
    assert float(
        as_numpy(jensen_shannon(ops.convert_to_tensor(first), ops.convert_to_tensor(second)))
    ) == pytest.approx(expected, rel=1e-4)
    assert float(as_numpy(jensen_shannon(ops.convert_to_tensor(first), ops.convert_to_tensor(first)))) == pytest.approx(
        0, abs=1e-6
    )


def test_the_twin_doubles_a_training_batch_and_leaves_inference_alone():
    series = ops.convert_to_tensor(np.zeros((500, 100, 3), "float32"))
    twin = NoisedTwin(0.5, 1.5, weight=1.0, seed=1)
    assert as_numpy(twin(series, training=False)).shape == (500, 100, 3)
    doubled = as_numpy(twin(series, training=True))
    assert doubled.shape == (1000, 100, 3) and (doubled[:500] == 0).all()
    levels = doubled[500:].reshape(500, -1).std(1)  # each series' own level, drawn from [0.5, 1.5]
    assert levels.min() > 0.43 and levels.max() < 1.6 and levels.max() - levels.min() > 0.8  # 300 values: 6% spread


def tiny_model(consistency: float, low: float = 0.0, high: float = 1.2):
    config = load_config(
        None,
        [
            f"regularization.consistency={consistency}",
            f"regularization.consistency_noise=[{low}, {high}]",
            "model.units=8",
        ],
    )
    model = models.build_model(config, (12, 3), 3, np.zeros(3), np.ones(3))
    fitting.compile_model(model, config)
    return model


def test_the_training_loss_is_both_views_plus_the_weighted_divergence():
    rng = np.random.default_rng(0)
    series = rng.normal(size=(8, 12, 3)).astype("float32")
    labels = ops.convert_to_tensor(keras.utils.to_categorical(np.arange(8) % 3, 3))
    model = tiny_model(0.7)
    predicted = model(series, training=True)  # 16 rows: the clean half, then the noised one
    assert tuple(predicted.shape) == (16, 3)
    clean, noised = as_numpy(predicted[:8]), as_numpy(predicted[8:])
    total = float(as_numpy(model.compute_loss(series, labels, predicted, training=True)))
    both = keras.losses.categorical_crossentropy(ops.concatenate([labels, labels], 0), predicted)
    expected = float(np.mean(as_numpy(both))) + 0.7 * np.mean([jensenshannon(p, q) ** 2 for p, q in zip(clean, noised)])
    assert total == pytest.approx(expected, rel=1e-3)
    assert not np.allclose(clean, noised)  # the noised view is another input
    # at inference the model is the plain one: one row per series
    assert tuple(model(series, training=False).shape) == (8, 3) and model.get_layer(TWIN).weight == 0.7


def test_a_consistency_model_trains_saves_and_reloads_with_the_same_answers(tmp_path):
    keras.utils.set_random_seed(1)  # unseeded, its weights and noise draws fell under 0.5 after 3 epochs once in CI
    rng = np.random.default_rng(1)
    labels = np.arange(96) % 3
    series = (rng.normal(size=(96, 12, 3)) + labels[:, None, None]).astype("float32")
    model = tiny_model(1.0)
    history = model.fit(
        series, keras.utils.to_categorical(labels, 3), epochs=3, batch_size=16, verbose=0,
        validation_data=(series[:32], keras.utils.to_categorical(labels[:32], 3)),
    )  # fmt: skip
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.history["accuracy"][-1] > 0.5  # the clean half's accuracy, of three classes
    path = tmp_path / "model.keras"
    model.save(path)
    again = models.load_model(str(path))
    np.testing.assert_allclose(again.predict(series, verbose=0), model.predict(series, verbose=0), atol=1e-5)
