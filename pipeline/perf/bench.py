"""`make bench`: training and inference speed and peak memory of the main models on this device.

For each model and series shape (5x9 classroom, 128x9 raw) it measures, each phase in a fresh
process so that peak memory (RSS) belongs to that phase alone:
  training    windows per second in steady state (the second and later epochs: tracing excluded)
  inference   latency of one window (batch 1, median) and throughput at batch 512
  litert      the model exported as make export does (pipeline.phone.export: frozen, fixed (1, T, C)
              input, builtin ops): file size in MB and mean latency per window through the LiteRT
              interpreter (one thread), float32 and dynamic-range quantized (TensorFlow backend only)
Results go to reports/bench.json and reports/bench.md (or `--output`) with the device, backend
and versions. Synthetic data of the right shape are used: speed does not depend on the values.

The backend is Keras' (`KERAS_BACKEND=tensorflow|jax|torch`). `--models torch_bilstm` adds the
reference the GPU check compares against: the same 2-layer, 64-unit BiLSTM written directly in
PyTorch (`torch.nn.LSTM`, cuDNN on a GPU), timed the same way, in the same precision.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config, load_config, split_overrides
from pipeline.files import atomic_file, write_json_atomic
from pipeline.log import log
from pipeline.runtime import peak_rss_mb

MAIN_MODELS = ("lstm", "bilstm", "attention", "cnn_lstm")
REFERENCE = "torch_bilstm"  # plain PyTorch, not a Keras model
MEASURES = (
    "train_windows_per_second", "step_windows_per_second", "latency_ms_batch1", "inference_windows_per_second_batch512",
    "peak_rss_mb_train", "peak_rss_mb_infer", "litert_mb", "litert_latency_ms", "litert_dynamic_mb", "litert_dynamic_latency_ms",
)  # fmt: skip
SHAPES = ((5, 9), (128, 9))


def measure(
    phase: str, model_name: str, steps: int, channels: int, windows: int, overrides: list[str]
) -> dict[str, Any]:
    """Run one phase in this process and return its numbers (called in a child process)."""
    config = load_config(None, [f"model.name={model_name if model_name != REFERENCE else 'bilstm'}", *overrides])
    rng = np.random.default_rng(0)
    series = rng.normal(size=(windows, steps, channels)).astype(np.float32)
    labels = rng.integers(0, 6, windows)
    if model_name == REFERENCE:
        result = torch_reference(phase, series, labels, config)
    else:
        result = keras_model(phase, model_name, series, labels, config)
    result.update(
        {
            "model": model_name,
            "shape": f"{steps}x{channels}",
            "precision": "mixed_float16" if config.train.mixed_precision else "float32",
        }
    )
    result[f"peak_rss_mb_{phase}"] = peak_rss_mb()
    return result


def timed_inference(predict: Callable[[np.ndarray], Any], series: np.ndarray) -> dict[str, float]:
    """Median latency of one window and throughput at batch 512, after warm-up calls (tracing, allocation)."""
    one, batch = series[:1], series[:512]
    for _ in range(3):
        predict(one)
        predict(batch)
    latencies = []
    for _ in range(50):
        started = time.perf_counter()
        predict(one)
        latencies.append(time.perf_counter() - started)
    batch_seconds = []
    for _ in range(5):
        started = time.perf_counter()
        predict(batch)
        batch_seconds.append(time.perf_counter() - started)
    return {
        "latency_ms_batch1": round(1000 * float(np.median(latencies)), 2),
        "inference_windows_per_second_batch512": round(len(batch) / float(np.median(batch_seconds)), 1),
    }


def keras_model(phase: str, model_name: str, series: np.ndarray, labels: np.ndarray, config: Config) -> dict[str, Any]:
    import keras

    from pipeline import models, runtime
    from pipeline.runs import fitting

    runtime.setup_devices(config)
    model = models.build_model(config, series.shape[1:], 6)
    result: dict[str, Any] = {"parameters": int(model.count_params())}
    if phase == "train":
        fitting.compile_model(model, config)
        epoch_seconds: list[float] = []

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                epoch_seconds.append(time.perf_counter() - self.started)

        model.fit(
            series,
            keras.utils.to_categorical(labels, 6),
            batch_size=config.train.batch_size,
            epochs=3,
            verbose=0,
            callbacks=[Timer()],
        )
        result["train_windows_per_second"] = round(len(series) / float(np.median(epoch_seconds[1:])), 1)
        result["train_batch_size"] = config.train.batch_size
        result["kernel_paths"] = "; ".join(
            f"{row['layer']}: {row['path']}" for row in models.observed_kernel_paths(model, series[:2])
        )
    elif phase == "litert":
        from pipeline.phone.export import convert, frozen_function, interpreter_probabilities

        frozen = frozen_function(model, series.shape[1:])
        for label, quantization in (("litert", ""), ("litert_dynamic", "dynamic")):
            model_bytes, select_ops = convert(frozen, quantization)
            interpreter_probabilities(model_bytes, series[:5])  # warm-up: allocation, delegate set-up
            _probabilities, seconds = interpreter_probabilities(model_bytes, series[:200])
            result[f"{label}_mb"] = round(len(model_bytes) / 1e6, 3)
            result[f"{label}_latency_ms"] = round(seconds * 1000, 3)
            if select_ops:
                result["litert_select_ops"] = ", ".join(select_ops)
    elif phase == "step":
        fitting.compile_model(model, config)
        result["step_windows_per_second"] = compiled_step_throughput(model, series, labels, config.train.batch_size)
    else:
        result.update(timed_inference(model.predict_on_batch, series))
    return result


def compiled_step_throughput(model: Any, series: np.ndarray, labels: np.ndarray, batch_size: int) -> float:
    """Windows per second of the model's forward, backward and optimizer update alone: batches already
    on the device, no `fit` loop, data adapter or callbacks. Set beside `fit`'s throughput, it says
    how much of a step is Keras' training loop and how much is the model's own arithmetic."""
    import keras

    batch_size = min(batch_size, len(series))
    steps = len(series) // batch_size
    x = series[: steps * batch_size].reshape(steps, batch_size, *series.shape[1:])
    y = keras.utils.to_categorical(labels[: steps * batch_size], 6).reshape(steps, batch_size, 6).astype(np.float32)
    loss_function = keras.losses.CategoricalCrossentropy()
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def loss_and_state(trainable: Any, non_trainable: Any, inputs: Any, targets: Any) -> Any:
            outputs, non_trainable = model.stateless_call(trainable, non_trainable, inputs, training=True)
            return loss_function(targets, outputs), non_trainable

        @jax.jit
        def step(state: Any, inputs: Any, targets: Any) -> Any:
            trainable, non_trainable, optimizer_state = state
            (loss, non_trainable), gradients = jax.value_and_grad(loss_and_state, has_aux=True)(
                trainable, non_trainable, inputs, targets
            )
            trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, gradients, trainable)
            return (trainable, non_trainable, optimizer_state), loss

        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )
        x, y = jax.device_put(x), jax.device_put(y)

        def run_epoch(state: Any) -> Any:
            for index in range(steps):
                state, loss = step(state, x[index], y[index])
            loss.block_until_ready()
            return state

    elif backend == "torch":
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        variables = model.trainable_variables
        synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def run_epoch(state: Any) -> Any:
            for index in range(steps):
                for variable in variables:
                    variable.value.grad = None
                loss = loss_function(y[index], model(x[index], training=True))
                loss.backward()
                optimizer.apply([variable.value.grad for variable in variables], variables)
            synchronize()
            return state

        state = None
    else:
        raise ValueError("the compiled-step measure is written for the jax and torch backends")
    state = run_epoch(state)  # compile and warm up
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        state = run_epoch(state)
        seconds.append(time.perf_counter() - started)
    return round(steps * batch_size / float(np.median(seconds)), 1)


def torch_reference(phase: str, series: np.ndarray, labels: np.ndarray, config: Config) -> dict[str, Any]:
    """The Keras `bilstm` written directly in PyTorch: nn.LSTM(bidirectional, 2 layers) + a linear head,
    Adam at the same learning rate, batches fed from host memory as Keras feeds them."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(config.train.seed)
    units, depth = config.model.units, config.model.layers

    class BiLSTM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.recurrent = torch.nn.LSTM(
                series.shape[-1], units, num_layers=depth, bidirectional=True, batch_first=True
            )
            self.head = torch.nn.Linear(2 * units, 6)

        def forward(self, x: Any) -> Any:
            _, (hidden, _) = self.recurrent(x)
            return self.head(
                torch.cat([hidden[-2], hidden[-1]], dim=-1)
            )  # last layer: forward and backward final states

    model = BiLSTM().to(device)
    mixed = config.train.mixed_precision and device.type == "cuda"
    autocast = lambda: torch.autocast(device.type, dtype=torch.float16, enabled=mixed)  # noqa: E731
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result: dict[str, Any] = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "kernel_paths": f"nn.LSTM on {device.type}"
        + (" (cuDNN)" if device.type == "cuda" and torch.backends.cudnn.is_available() else ""),
    }
    if phase == "train":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
        scaler = torch.amp.GradScaler(device.type, enabled=mixed)
        inputs, targets = torch.from_numpy(series), torch.from_numpy(labels)
        batch_size, epoch_seconds = config.train.batch_size, []
        model.train()
        for _epoch in range(3):
            started = time.perf_counter()
            order = torch.randperm(len(inputs))
            for start in range(0, len(inputs), batch_size):
                index = order[start : start + batch_size]
                x, y = inputs[index].to(device), targets[index].to(device)
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            synchronize()
            epoch_seconds.append(time.perf_counter() - started)
        result["train_windows_per_second"] = round(len(series) / float(np.median(epoch_seconds[1:])), 1)
        result["train_batch_size"] = batch_size
    else:
        model.eval()

        def predict(batch: np.ndarray) -> Any:
            with torch.no_grad(), autocast():
                probabilities = torch.softmax(model(torch.from_numpy(batch).to(device)).float(), -1).cpu()
            return probabilities

        result.update(timed_inference(predict, series))
    return result


def device_description() -> dict[str, Any]:
    import keras

    from pipeline.runtime import backend_devices

    devices = backend_devices()
    return {
        "device": ", ".join(devices["gpus"])
        if devices["gpus"]
        else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "backend": devices["backend"],
        "versions": {
            "python": platform.python_version(),
            devices["backend"]: devices["backend_version"],
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
    }


def run_child(phase: str, model: str, shape: tuple[int, int], windows: int, overrides: list[str]) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "pipeline.perf.bench",
        "--child",
        phase,
        model,
        str(shape[0]),
        str(shape[1]),
        str(windows),
        *[f"--set={o}" for o in overrides],
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        log.warning(result.stderr)  # the whole traceback: the last line alone can be a framework's footnote
        lines = result.stderr.strip().splitlines() or ["no output"]
        cause = next((line for line in reversed(lines) if re.match(r"^[\w.]+(Error|Exception)\b", line)), lines[-1])
        raise RuntimeError(f"bench {phase} {model} {shape}: {cause}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(report: dict[str, Any]) -> str:
    import pandas as pd

    table = pd.DataFrame(report["results"])
    columns = [
        c for c in ["model", "shape", "precision", "parameters", *MEASURES, "kernel_paths"] if c in table.columns
    ]
    header = f"# Benchmark\n\nDevice: {report['device']}; backend {report['backend']}; " + ", ".join(
        f"{k} {v}" for k, v in report["versions"].items()
    )
    return f"{header}\n\nCommand: `{report['command']}`\n\n{table[columns].to_markdown(index=False)}\n"


def main(argv: list[str] | None = None) -> int:
    from pipeline.runtime import backend_name, import_keras

    import_keras()
    parser = argparse.ArgumentParser(prog="python -m pipeline.perf.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MAIN_MODELS))
    parser.add_argument("--shapes", default=",".join(f"{t}x{c}" for t, c in SHAPES), help="e.g. 5x9,128x9")
    parser.add_argument("--windows", type=int, default=4096, help="synthetic windows per training epoch")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override (e.g. train.mixed_precision=true)",
    )
    parser.add_argument("--sets", default="", help="several overrides in one string, as make's SET= passes them")
    parser.add_argument(
        "--phases",
        default="train,infer,litert",
        help="train (fit), infer, litert (exported file: size, latency; tensorflow only), step (the compiled training step alone; jax and torch)",
    )
    parser.add_argument(
        "--precisions",
        default="",
        help="float32,mixed_float16: measure each in turn in this one run (default: the config's own precision)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every phase in this process (faster; peak memory then covers all phases): for dry runs",
    )
    parser.add_argument(
        "--output", default="", help="path without extension for the .json and .md (default: reports/bench)"
    )
    parser.add_argument("--child", nargs=5, metavar=("PHASE", "MODEL", "T", "C", "WINDOWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.set = [*split_overrides(args.sets), *args.set]
    if args.child:
        phase, model, steps, channels, windows = args.child
        print(json.dumps(measure(phase, model, int(steps), int(channels), int(windows), args.set)))
        return 0
    output = Path(args.output) if args.output else load_config(None, args.set).path("reports") / "bench"
    shapes = [tuple(int(v) for v in text.split("x")) for text in args.shapes.split(",")]
    precisions = [name for name in args.precisions.split(",") if name]
    if not set(precisions) <= {"float32", "mixed_float16"}:
        print(f"error: --precisions takes float32 and mixed_float16, got {args.precisions!r}", file=sys.stderr)
        return 1
    results = []
    for precision in precisions or [""]:
        overrides = [
            *args.set,
            *([f"train.mixed_precision={str(precision == 'mixed_float16').lower()}"] * bool(precision)),
        ]
        for model in args.models.split(","):
            for shape in shapes:
                row: dict[str, Any] = {}
                for phase in args.phases.split(","):
                    if phase == "step" and model == REFERENCE:
                        continue  # the reference's training loop is already its bare step
                    if phase == "litert" and (model == REFERENCE or backend_name() != "tensorflow"):
                        continue  # the LiteRT converter takes TensorFlow graphs
                    measured = (
                        measure(phase, model, *shape, args.windows, overrides)
                        if args.in_process
                        else run_child(phase, model, shape, args.windows, overrides)
                    )
                    row.update({k: v for k, v in measured.items() if k not in row})
                log.info(
                    f"{model:12s} {shape[0]}x{shape[1]} {row['precision']}: "
                    + ", ".join(f"{key} {row[key]}" for key in MEASURES if key in row),
                )
                results.append(row)
    report = {
        **device_description(),
        "command": " ".join(["python -m pipeline.perf.bench", *(argv if argv is not None else sys.argv[1:])]),
        "windows": args.windows,
        "overrides": args.set,
        "results": results,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output.with_suffix(".json"), report)
    with atomic_file(output.with_suffix(".md")) as temp:
        temp.write_text(markdown(report))
    log.info(f"wrote {output.with_suffix('.json')} and {output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
