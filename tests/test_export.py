"""make export: LiteRT files a phone runs with builtin ops, checked against Keras by the real LiteRT
interpreter (ai-edge-litert) on at least 500 test windows, and a contract an app can follow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.data.datasets import open_competition
from pipeline.errors import ConfigError, ExportError
from pipeline.phone import export
from tests import toy_architecture
from tests.conftest import run_make

toy_architecture.register()  # exported below with every registered model


@pytest.fixture(scope="module")
def raw_export(prepared_root: Path, raw_run: str) -> tuple[Path, str]:
    """The session's raw-window BiLSTM (tests/conftest.py: 16 units, weights big enough to be quantized,
    the statistics branch; parity does not need a good model, the 128-step loop is what the converter
    must get right), exported by make export on 600 test windows."""
    exported = run_make("export", f"RUN={raw_run}", f"SET=paths.root={prepared_root} export.parity_windows=600")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "builtin ops only" in exported.stdout
    return prepared_root / "exports" / raw_run, raw_run


def test_the_litert_file_gives_keras_answers_through_the_litert_interpreter(prepared_root, raw_export):
    """Recomputed here from the written file, not read from parity.json: 600 test windows, float32."""
    from ai_edge_litert.interpreter import Interpreter

    from pipeline import models

    folder, run_id = raw_export
    config = load_config(None, [f"paths.root={prepared_root}", "data.competition=raw"])
    windows = open_competition(config).test.series[
        export.parity_indices(len(open_competition(config).test), 600, config.data.seed)
    ]
    keras_probabilities = models.load_model(str(prepared_root / "runs" / run_id / "model.keras")).predict(
        windows, verbose=0
    )
    interpreter = Interpreter(model_path=str(folder / "model.tflite"))
    interpreter.allocate_tensors()
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(source["shape"]) == [1, 128, 9] and source["dtype"] == np.float32
    litert = []
    for window in windows:
        interpreter.set_tensor(source["index"], window[None].astype(np.float32))
        interpreter.invoke()
        litert.append(interpreter.get_tensor(target["index"])[0].copy())
    litert = np.array(litert)
    assert len(windows) == 600 and np.abs(litert - keras_probabilities).max() <= 1e-4
    assert (litert.argmax(1) == keras_probabilities.argmax(1)).all()
    ops = export.file_ops((folder / "model.tflite").read_bytes())
    assert (
        "WHILE" in ops and "FULLY_CONNECTED" in ops and not any(op.startswith("Flex") or op == "DELEGATE" for op in ops)
    ), ops  # builtin ops only


def test_the_quantized_variant_the_parity_report_and_the_contract(raw_export):
    folder, run_id = raw_export
    parity = json.loads((folder / "parity.json").read_text())
    contract = json.loads((folder / "contract.json").read_text())
    float_size, small_size = (folder / "model.tflite").stat().st_size, (folder / "model_dynamic.tflite").stat().st_size
    assert small_size < float_size and parity["model_dynamic.tflite"]["bytes"] == small_size
    assert (
        parity["windows"] == 600
        and parity["model.tflite"]["max_abs_difference"] <= 1e-4
        and parity["model.tflite"]["class_differs"] == 0
    )
    assert (
        set(parity["accuracy"]) == {"keras", "model.tflite", "model_dynamic.tflite"}
        and parity["accuracy"]["keras"] == parity["accuracy"]["model.tflite"]
    )
    assert contract["run"] == run_id and contract["input"]["shape"] == [1, 128, 9]
    assert contract["input"]["channels"][:3] == ["body_acc_x", "body_acc_y", "body_acc_z"] and contract["input"][
        "units"
    ] == {"acc": "g", "gyro": "rad/s"}
    assert contract["sample_rate_hz"] == 50 and contract["window"] == 128 and contract["hop"] == 64
    assert contract["class_names"] == [
        "WALKING",
        "WALKING_UPSTAIRS",
        "WALKING_DOWNSTAIRS",
        "SITTING",
        "STANDING",
        "LAYING",
    ]
    assert contract["select_tf_ops"] == [] and any("0.3 Hz" in step for step in contract["preprocessing"])


def test_a_parity_failure_writes_nothing_and_a_cv_needs_one_run(prepared_root, raw_export, capsys):
    _folder, run_id = raw_export
    root = f"paths.root={prepared_root}"
    code = export.main(
        [
            "--run",
            run_id,
            "--set",
            root,
            "--set",
            "export.tolerance=1e-12",
            "--set",
            "export.parity_windows=20",
            "--set",
            "paths.exports=exports_strict",
        ]
    )
    error = capsys.readouterr().err
    assert code == 1 and "does not match Keras" in error and "nothing written" in error
    assert not (prepared_root / "exports_strict").exists()
    with pytest.raises(ConfigError, match="make export takes one run, got 2"):
        export.export(load_config(None, [root, "data.competition=raw"]), [run_id, run_id])


def test_ops_outside_the_builtins_are_named_and_flagged_or_refused():
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    def frozen(function):
        return convert_variables_to_constants_v2(
            tf.function(function, input_signature=[tf.TensorSpec((1, 4, 4), tf.float32)]).get_concrete_function()
        )

    _bytes, select_ops = export.convert(frozen(tf.linalg.inv))
    assert select_ops == ["MatrixInverse"]  # in the select-TF runtime: exported and flagged
    assert export.convert(frozen(tf.nn.relu))[1] == []
    with pytest.raises(ExportError, match="cannot express"):
        export.convert(frozen(tf.math.erfinv))  # in neither: refused


def test_every_registered_model_exports_with_builtin_ops_and_matches_keras():
    """Each model of pipeline.models (untrained, 4 units, 5 x 9 input) through the same conversion:
    builtin ops only, and the LiteRT interpreter's answers equal Keras' on random inputs."""
    from pipeline import models
    from pipeline.data.signals import MEAN_FEATURES

    inputs = np.random.default_rng(0).normal(size=(16, 5, 9)).astype(np.float32)
    small = [
        "model.units=4",
        "model.attention.units=4",
        "model.seq2seq.attention_units=4",
        "model.seq2seq.decoder_units=4",
    ]
    variants = [(name, [f"model.name={name}", *small]) for name in models.MODELS]
    variants.append(("bilstm with window_stats", ["model.window_stats=true", *small]))  # the branches too
    variants.append(
        (
            "bilstm with downsample, front_end and wide",
            [
                "model.downsample=2",
                "model.front_end=[3,5]",
                "model.front_end_filters=4",
                "model.front_end_residual=true",
                "model.wide=input",
                *small,
            ],
        )
    )
    # noise-consistency training: a model of another class in training, the plain one at inference
    variants.append(("bilstm trained for noise consistency", ["regularization.consistency=1.0", *small]))
    for name, overrides in variants:
        model = models.build_model(load_config(None, overrides), (5, 9), 6, channels=MEAN_FEATURES)
        model_bytes, select_ops = export.convert(export.frozen_function(model, (5, 9)))
        probabilities, _seconds = export.interpreter_probabilities(model_bytes, inputs)
        assert select_ops == [], name
        np.testing.assert_allclose(probabilities, model.predict(inputs, verbose=0), atol=1e-5, err_msg=name)
