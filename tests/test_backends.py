"""Keras backends: a real training run on JAX (the model tests rerun on JAX and PyTorch:
tests/test_models_on_other_backends.py), a model file moving between
TensorFlow, JAX and PyTorch, data parallelism on two JAX CPU devices, TensorFlow-only features
refused elsewhere (the GPU check's CPU dry run: tests/test_gpu_check.py, a file of its own so that
another test worker can take it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import runtime
from pipeline.config import ConfigError
from pipeline.runtime import BackendError
from tests.conftest import TINY, on_backend, run_make

pytestmark = pytest.mark.slow


def tiny_sets(root: Path, *overrides: str) -> str:
    return " ".join([f"paths.root={root}", *TINY, *overrides])


def test_training_predicting_and_evaluating_on_jax_is_a_run_of_its_own(prepared_root: Path, tiny_run: Path):
    overrides = tiny_sets(prepared_root, "regularization.gaussian_noise=0.5", "regularization.l2=1e-4")
    trained = run_make("train", "BACKEND=jax", "EXP=experiments/baseline.toml", f"SET={overrides}")
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    run_id = next(line.split()[1] for line in trained.stdout.splitlines() if line.startswith("done "))
    run_dir = prepared_root / "runs" / run_id
    # The same config as the TensorFlow run of the tiny_run fixture, yet another run: the backend is in the id.
    assert run_id != tiny_run.name and run_id.rsplit("_", 1)[0] == tiny_run.name.rsplit("_", 1)[0]
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["backend"] == "jax" and json.loads((run_dir / "run.json").read_text())["backend"] == "jax"
    assert environment["backend_version"] and environment["devices"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["validation"]) == {"0", "0.25", "0.5", "1"} and "competition_file" in metrics["test"]

    predicted = run_make("predict", "BACKEND=jax", f"RUN={run_id}", f"SET=paths.root={prepared_root}")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    evaluated = run_make("evaluate", "BACKEND=jax", f"RUN={run_id}", f"SET=paths.root={prepared_root}")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    # The gradient-through-time plot (d loss / d input) comes from JAX's own autodiff here.
    assert (prepared_root / "reports" / run_id / "gradient_through_time.png").is_file()
    assert "## Gradient through time" in (prepared_root / "reports" / run_id / "report.md").read_text()


def test_a_model_saved_on_tensorflow_predicts_and_differentiates_the_same_on_jax_and_torch(
    tiny_run: Path, prepared_config, tmp_path: Path
):
    """Predictions and input gradients (each backend's own autodiff) of one .keras file agree."""
    import keras

    from pipeline import models
    from pipeline.data.competition import load_competition

    series = load_competition(prepared_config.processed_dir / "classroom").test.series[:64].astype(np.float32)
    targets = keras.utils.to_categorical(np.arange(64) % 6, 6)
    np.save(tmp_path / "series.npy", series)
    np.save(tmp_path / "targets.npy", targets)
    model = models.load_model(str(tiny_run / "model.keras"))
    expected_probabilities = model.predict(series, verbose=0)
    expected_gradients = models.input_gradients(model, series, targets)
    assert np.abs(expected_gradients).max() > 0
    script = (
        "import sys, numpy as np\n"
        "from pipeline.models import input_gradients, load_model\n"
        "model = load_model(sys.argv[1]); series = np.load(sys.argv[2]); targets = np.load(sys.argv[3])\n"
        "np.save(sys.argv[4], np.asarray(model.predict(series, verbose=0)))\n"
        "np.save(sys.argv[5], input_gradients(model, series, targets))\n"
    )
    for backend in ("jax", "torch"):
        probabilities, gradients = tmp_path / f"{backend}_p.npy", tmp_path / f"{backend}_g.npy"
        result = on_backend(
            backend,
            sys.executable,
            "-c",
            script,
            str(tiny_run / "model.keras"),
            str(tmp_path / "series.npy"),
            str(tmp_path / "targets.npy"),
            str(probabilities),
            str(gradients),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        np.testing.assert_allclose(np.load(probabilities), expected_probabilities, atol=1e-5, err_msg=backend)
        np.testing.assert_allclose(np.load(gradients), expected_gradients, rtol=1e-3, atol=1e-6, err_msg=backend)


def test_data_parallel_on_two_jax_cpu_devices(prepared_root: Path):
    overrides = tiny_sets(
        prepared_root, "train.distribute=data_parallel", "train.cpu_devices=2", "train.epochs=1", "train.batch_size=32"
    )
    result = run_make("train", "BACKEND=jax", f"SET={overrides}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "2 replica(s)" in result.stdout
    run_id = next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("done "))
    environment = json.loads((prepared_root / "runs" / run_id / "environment.json").read_text())
    assert (
        environment["replicas"] == 2
        and environment["distribute"] == "data_parallel"
        and len(environment["devices"]) == 2
    )


@pytest.mark.parametrize(
    ("backend", "override", "named"),
    [
        ("jax", "train.distribute=mirrored", "KERAS_BACKEND=tensorflow"),
        ("jax", "train.deterministic=true", "KERAS_BACKEND=tensorflow"),
        ("tensorflow", "train.distribute=data_parallel", "KERAS_BACKEND=jax"),
        ("torch", "train.cpu_devices=2", "KERAS_BACKEND=tensorflow or jax"),
    ],
)
def test_a_feature_of_another_backend_is_refused_in_one_line(
    prepared_root: Path, backend: str, override: str, named: str
):
    result = on_backend(
        backend,
        sys.executable,
        "-m",
        "pipeline.stages.train",
        *(f"--set={item}" for item in tiny_sets(prepared_root, override).split()),
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0] and f"KERAS_BACKEND={backend}" in errors[0], result.stderr[-2000:]


def test_cpu_devices_that_cannot_take_effect_are_refused():
    import tensorflow as tf

    tf.config.list_logical_devices()  # this process's devices are set up now
    already = len(tf.config.list_logical_devices("CPU"))
    with pytest.raises(ConfigError, match="cannot take effect"):
        runtime.split_cpu(already + 1)


def test_backend_refusal_names_both_backends():
    from pipeline.runtime import require_backend

    with pytest.raises(BackendError, match="needs KERAS_BACKEND=jax; this process runs KERAS_BACKEND=tensorflow"):
        require_backend("something", "jax")
