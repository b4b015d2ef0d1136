"""Keras backends: the model tests and a real training run on JAX, a model file moving between
TensorFlow, JAX and PyTorch, data parallelism on two JAX CPU devices, TensorFlow-only features
refused elsewhere, and the GPU check's CPU dry run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import runtime
from pipeline.config import ConfigError
from pipeline.runtime import BackendError
from tests.conftest import PROJECT_ROOT, TINY, run_make

pytestmark = pytest.mark.slow


def on_backend(backend: str, *command: str, timeout: int = 600, **variables: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "KERAS_BACKEND": backend, **variables}
    return subprocess.run(
        list(command), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, env=environment
    )


def tiny_sets(root: Path, *overrides: str) -> str:
    return " ".join([f"paths.root={root}", *TINY, *overrides])


@pytest.mark.parametrize(
    ("backend", "files"),
    [("jax", ["tests/test_models.py", "tests/test_augment.py"]), ("torch", ["tests/test_augment.py"])],
)
def test_the_model_and_augmentation_tests_pass_on_another_backend(backend: str, files: list[str]):
    """The model tests (each model learns, saves, reloads in a fresh process) run again on JAX, on the
    128x9 windows and the models with layers or cells of their own: the deep-transition cell, additive
    attention, the seq2seq decoder (the others, bilstm and cnn_lstm included, are Keras' own LSTM, GRU,
    Conv1D and Dense stacks around the same input layers); the augmentation layers on JAX and PyTorch
    (PyTorch's model path is covered below)."""
    result = on_backend(
        backend,
        sys.executable,
        "-m",
        "pytest",
        *files,
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        # The fixed-context reverse task and the exhaustive beam check test decoding logic that does
        # not depend on the backend (the attention reverse task and END/max-length decoding run here), and
        # the front end and wide path are Keras' own layers (the statistics branch, a layer of ours, runs here).
        "-k",
        "not fixed_context and not exhaustive and not front_end",
        timeout=900,
        HAR_TEST_SHAPES="128x9",
        HAR_TEST_MODELS="deep_transition,attention,seq2seq",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.strip().splitlines()[-1] and " failed" not in result.stdout


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


def test_the_gpu_check_dry_run_exercises_every_step(prepared_root: Path, tmp_path: Path):
    # A real wheel for the install step, built offline from a one-module package.
    package = tmp_path / "probe"
    (package / "gpu_check_probe").mkdir(parents=True)
    (package / "gpu_check_probe" / "__init__.py").write_text("VALUE = 42\n")
    (package / "pyproject.toml").write_text(
        '[project]\nname = "gpu-check-probe"\nversion = "1.0"\n[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(package),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    output = tmp_path / "gpu_check"
    environment = {**os.environ, "PYTHON": sys.executable, "WHEELS": str(wheels)}
    result = subprocess.run(
        [
            "bash",
            "scripts/gpu-check.sh",
            "--dry-run",
            "--root",
            str(prepared_root),
            "--windows",
            "32",
            "--output",
            str(output),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=environment,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "installed 1 wheel(s)" in result.stdout
    report = json.loads(output.with_suffix(".json").read_text())
    assert report["dry_run"] and report["errors"] == []
    assert {report["device"][backend]["backend"] for backend in ("jax", "torch")} == {"jax", "torch"}
    rows = report["bench"]
    measured = {(row["backend"], row["precision"]) for row in rows}
    assert {
        (backend, precision)
        for backend in ("jax", "torch", "plain PyTorch")
        for precision in ("float32", "mixed_float16")
    } <= measured
    assert all(row["train_windows_per_second"] > 0 and row["kernel_paths"] for row in rows)
    assert all(
        row.get("step_windows_per_second", 0) > 0
        for row in rows
        if row["backend"] in ("jax", "torch") and row["setting"] == "float32"
    )
    assert {check["check"].split(" / ")[0] for check in report["targets"]} >= {"Keras jax", "Keras torch"}
    assert (
        report["time"]
        and report["training"]["backend"] == "jax"
        and set(report["training"]["test"]) == {"0", "0.25", "0.5", "1"}
    )
    assert "## Where the time goes" in output.with_suffix(".md").read_text()
