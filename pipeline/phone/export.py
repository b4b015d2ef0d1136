"""`make export [RUN=...]`: a run's model as LiteRT (.tflite) files for phones, with parity proven.

Writes exports/<run_id>/:
- `model.tflite`: float32, fixed input (1, T, 9), the normalization inside, builtin LiteRT ops only
  where the model allows it. How: the model called in inference mode inside a `tf.function` with a
  fixed input signature, its variables frozen into constants, converted by
  `TFLiteConverter.from_concrete_functions` with `supported_ops = [TFLITE_BUILTINS]`. Keras' own
  `model.export(format="litert")` keeps a dynamic batch and needs Flex (select TensorFlow) ops for the
  LSTM loops, which a phone runs only with the extra select-ops runtime (GUIDE section 8). A model the
  builtin ops cannot express is converted with select ops instead, and the contract flags it with
  the ops that forced it.
- `model_<quantization>.tflite`: dynamic-range (int8 weights) or float16 weights, smaller.
- `contract.json`: what an app must feed it: input layout and channel order, units, sample rate,
  window and hop, the preprocessing chain with its parameters, the class names, the output.
- `parity.json`: on `export.parity_windows` windows of the competition's test file (0 = all), the
  LiteRT interpreter (ai-edge-litert, the runtime phones use) against Keras: the largest probability
  difference and the windows where the class differs, for both files; their accuracy there when the
  answer key is at hand (a report, not a choice). The float file must match within
  `export.tolerance` with the same class on every window, or nothing is written.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cli import run_stage, stage_parser
from pipeline.config import PREPROCESSING, Config, DataConfig
from pipeline.data.datasets import open_competition, organizer_side
from pipeline.data.signals import ACTIVITY_NAMES, RAW_CHANNELS, window_step
from pipeline.errors import ConfigError, ExportError
from pipeline.files import atomic_folder
from pipeline.log import log
from pipeline.runs.folder import Lineage, RunFolder
from pipeline.runs.registry import finished_run, resolve_runs, run_config
from pipeline.runtime import require_backend

FLOAT_FILE = "model.tflite"
CONTRACT = "contract.json"
PARITY = "parity.json"


def frozen_function(model: Any, shape: tuple[int, int]) -> Any:
    """The model in inference mode as a concrete function of one (1, T, C) window, variables as constants."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = tf.function(
        lambda window: model(window, training=False),
        input_signature=[tf.TensorSpec((1, *shape), tf.float32, name="window")],
    )
    return convert_variables_to_constants_v2(function.get_concrete_function())


def convert(frozen: Any, quantization: str = "") -> tuple[bytes, list[str]]:
    """(the .tflite bytes, the select TensorFlow ops it needed: empty when builtin ops sufficed)."""
    import tensorflow as tf
    from absl import logging as absl_logging
    from tensorflow.lite.python.convert import ConverterError

    # the converter's deprecation notice for frozen functions: this is the path that gives builtin ops
    absl_logging.set_verbosity(absl_logging.ERROR)

    def converter(ops: list[Any]) -> Any:
        result = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        result.target_spec.supported_ops = ops
        if quantization == "dynamic":
            result.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantization == "float16":
            result.optimizations = [tf.lite.Optimize.DEFAULT]
            result.target_spec.supported_types = [tf.float16]
        return result

    try:
        return converter([tf.lite.OpsSet.TFLITE_BUILTINS]).convert(), []
    except ConverterError as error:
        select, custom = re.search(r"TF Select ops: (.+)", str(error)), re.search(r"Custom ops: (.+)", str(error))
        if custom or not select:
            raise ExportError(
                f"the LiteRT converter cannot express {'the ops ' + custom[1] if custom else 'this model'} with builtin or select TensorFlow ops"
            ) from None
        return converter([tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]).convert(), [
            op.strip() for op in select[1].split(",")
        ]


def interpreter_probabilities(model_bytes: bytes, windows: np.ndarray) -> tuple[np.ndarray, float]:
    """Run the file window by window through LiteRT's interpreter: (probabilities, seconds per window)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes, num_threads=1)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    outputs = []
    started = time.perf_counter()
    for window in windows.astype(np.float32):
        interpreter.set_tensor(source, window[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target)[0].copy())
    seconds = (time.perf_counter() - started) / max(len(windows), 1)
    return np.array(outputs), seconds


def file_ops(model_bytes: bytes) -> list[str]:
    """The ops the file holds (listed without the CPU delegate, which would show its fused part as one DELEGATE op)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=model_bytes, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return sorted({detail["op_name"] for detail in interpreter._get_ops_details()})


def contract(
    run_id: str, lineage: Lineage, data: DataConfig, files: dict[str, str], ops: list[str], select_ops: list[str]
) -> dict[str, Any]:
    """What an app must do to feed the model: the same chain as pipeline.data.signals, written out."""
    raw = tuple(lineage.channels) == RAW_CHANNELS
    steps, length = lineage.series_shape
    hop = window_step(data.window, data.overlap)
    chain = [
        f"resample the accelerometer (with gravity) and the gyroscope onto one {data.sample_rate_hz:g} Hz grid",
        "acceleration in g (m/s^2 divided by 9.80665), rotation in rad/s, device axes x, y, z",
        f"median filter, kernel {data.median_kernel} samples, on all 6 channels",
        f"Butterworth low-pass, order {data.lowpass_order}, {data.lowpass_hz:g} Hz, zero-phase (forward-backward, scipy.signal.sosfiltfilt) on all 6 channels",
        f"gravity = Butterworth low-pass, order 3, {data.gravity_hz:g} Hz, zero-phase, of the filtered acceleration; body_acc = total_acc - gravity",
        f"windows of {data.window} samples ({data.window / data.sample_rate_hz:g} s), a new one every {hop} samples",
    ]
    if not raw:
        chain.append(
            "per window the means of body_acc x, y, z, of gravity (total_acc - body_acc) x, y, z and of body_gyro x, y, z"
        )
        chain.append(f"a model input is {steps} consecutive windows' features (one window apart)")
    return {
        "run": run_id,
        "files": files,
        "input": {
            "name": "window",
            "shape": [1, steps, length],
            "dtype": "float32",
            "layout": "batch of 1, time steps (oldest first), channels",
            "channels": list(lineage.channels),
            "units": {"acc": "g", "gyro": "rad/s"},
            "normalization": "inside the model (the training split's per-channel mean and variance): feed the values unscaled",
        },
        "sample_rate_hz": data.sample_rate_hz,
        "window": data.window,
        "hop": hop,
        "preprocessing": chain,
        "preprocessing_parameters": {key: getattr(data, key) for key in PREPROCESSING},
        "output": {
            "shape": [1, len(lineage.classes)],
            "meaning": "class probabilities (softmax), in the order of classes",
        },
        "classes": lineage.classes,
        "class_names": [ACTIVITY_NAMES.get(int(c), str(c)) for c in lineage.classes],
        "ops": ops,  # of the main graph (the loop bodies are subgraphs of WHILE)
        "builtin_ops_only": not select_ops,
        "select_tf_ops": select_ops,
        "note": "the filters are zero-phase: apply them to a buffer of several windows and cut windows from its middle, not sample by sample",
    }


def parity_indices(count: int, wanted: int, seed: int) -> np.ndarray:
    """A seeded sample of `wanted` test windows in file order (all when wanted is 0 or more than there are)."""
    if wanted <= 0 or wanted >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, wanted, replace=False))


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    return {
        "max_abs_difference": float(np.abs(reference - candidate).max()),
        "class_differs": int((reference.argmax(1) != candidate.argmax(1)).sum()),
    }


def export(config: Config, run_ids: list[str]) -> Path:
    require_backend("make export", "tensorflow")

    run_ids = resolve_runs(config, run_ids)
    for run_id in run_ids:
        lineage = RunFolder(finished_run(config, run_id)).lineage()
        if lineage.kind == "blend":
            raise ConfigError(
                f"run {run_id} is a blend (make blend): its peers are scikit-learn pipelines and its gate NumPy, which have "
                "no LiteRT form; export one of its recurrent members, or make ensemble of recurrent runs, which exports"
            )
    if len(run_ids) != 1:
        raise ConfigError(
            f"make export takes one run, got {len(run_ids)} ({', '.join(run_ids)}); for a cross-validation export its refit (make cv REFIT=1) or one fold"
        )
    (run_id,) = run_ids
    run_dir = finished_run(config, run_id)
    lineage = RunFolder(run_dir).lineage()
    trained = run_config(config, run_dir)
    model = RunFolder(run_dir).load_model()
    shape = tuple(lineage.series_shape)
    frozen = frozen_function(model, shape)
    variant = f"model_{config.export.quantization}.tflite"
    float_bytes, select_ops = convert(frozen)
    small_bytes, _ = convert(frozen, config.export.quantization)

    competition = open_competition(trained)
    chosen = parity_indices(len(competition.test), config.export.parity_windows, config.data.seed)
    windows = competition.test.series[chosen].astype(np.float32)
    parity: dict[str, Any] = {
        "run": run_id,
        "windows": len(windows),
        "of": f"the test file of {lineage.competition} (noise {trained.data.test_noise:g} std)",
        "tolerance": config.export.tolerance,
    }
    if select_ops:
        # LiteRT's Python interpreter has no select-ops runtime (it refuses such files), so parity cannot be checked here
        log.info(
            f"warning: {run_id} needs select TensorFlow ops ({', '.join(select_ops)}): exported "
            "with them, parity not checked (the LiteRT interpreter here runs builtin ops only)"
        )
        parity["checked"] = False
        ops: list[str] = []
        summary = (
            f"SELECT TF OPS needed by {', '.join(select_ops)}: phones need the select-ops runtime; parity not checked"
        )
    else:
        if len(windows) < 500 and len(competition.test) >= 500:
            log.info(f"note: parity on {len(windows)} windows (export.parity_windows); 500 or more is the usual check")
        reference = model.predict(windows, batch_size=512, verbose=0)
        float_probabilities, float_seconds = interpreter_probabilities(float_bytes, windows)
        small_probabilities, small_seconds = interpreter_probabilities(small_bytes, windows)
        ops = file_ops(float_bytes)
        float_parity, small_parity = compare(reference, float_probabilities), compare(reference, small_probabilities)
        if float_parity["max_abs_difference"] > config.export.tolerance or float_parity["class_differs"]:
            raise ExportError(
                f"{run_id}: the LiteRT file does not match Keras (largest difference {float_parity['max_abs_difference']:.2e}, "
                f"class differs on {float_parity['class_differs']} of {len(windows)} windows); nothing written"
            )
        parity["checked"] = True
        parity[FLOAT_FILE] = {**float_parity, "bytes": len(float_bytes), "seconds_per_window": round(float_seconds, 6)}
        parity[variant] = {**small_parity, "bytes": len(small_bytes), "seconds_per_window": round(small_seconds, 6)}
        summary = (
            f"builtin ops only; max difference to Keras {float_parity['max_abs_difference']:.1e} on {len(windows)} test windows, same class on all; "
            f"{variant} max difference {small_parity['max_abs_difference']:.1e}, class differs on {small_parity['class_differs']}"
        )
        organizer = organizer_side(trained, competition, tuple(lineage.classes))
        if organizer is not None:
            labels = organizer.file_labels[chosen]
            parity["accuracy"] = {
                name: round(float((p.argmax(1) == labels).mean()), 4)
                for name, p in (("keras", reference), (FLOAT_FILE, float_probabilities), (variant, small_probabilities))
            }
            summary += (
                f"; accuracy keras {parity['accuracy']['keras']:.4f}, float {parity['accuracy'][FLOAT_FILE]:.4f}, "
                f"{config.export.quantization} {parity['accuracy'][variant]:.4f}"
            )
    files = {"float32": FLOAT_FILE, config.export.quantization: variant}
    terms = contract(run_id, lineage, trained.data, files, ops, select_ops)
    target = config.path("exports", run_id)
    with atomic_folder(target) as folder:
        (folder / FLOAT_FILE).write_bytes(float_bytes)
        (folder / variant).write_bytes(small_bytes)
        (folder / CONTRACT).write_text(json.dumps(terms, indent=2) + "\n")
        (folder / PARITY).write_text(json.dumps(parity, indent=2) + "\n")
    log.info(
        f"wrote {target}/: {FLOAT_FILE} {len(float_bytes) / 1e6:.2f} MB, {variant} {len(small_bytes) / 1e6:.2f} MB ({summary})"
    )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("pipeline.phone.export", __doc__)
    parser.add_argument("--run", default="", help="one run id (default: the best run of the competition)")
    args = parser.parse_args(argv)
    return run_stage(lambda config: export(config, args.run.split()), args, keras=True)


if __name__ == "__main__":
    sys.exit(main())
