"""`make bench`: training and inference speed and peak memory of the main models on this device.

For each model and series shape (5x9 classroom, 128x9 raw) it measures, each phase in a fresh
process so that peak memory (RSS) belongs to that phase alone:
  training    windows per second in steady state (the second and later epochs: tracing excluded)
  inference   latency of one window (batch 1, median) and throughput at batch 512
Results go to reports/bench.json and reports/bench.md with the device, backend and versions.
Synthetic data of the right shape are used: speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

from pipeline.config import load_config
from pipeline.files import atomic_file, write_json_atomic

MAIN_MODELS = ("lstm", "bilstm", "attention", "cnn_lstm")
SHAPES = ((5, 9), (128, 9))


def measure(phase: str, model_name: str, steps: int, channels: int, windows: int, overrides: list[str]) -> dict[str, Any]:
    """Run one phase in this process and return its numbers (called in a child process)."""
    import keras

    from pipeline import models, train

    config = load_config(None, [f"model.name={model_name}", *overrides])
    train.setup_devices(config)
    rng = np.random.default_rng(0)
    series = rng.normal(size=(windows, steps, channels)).astype(np.float32)
    labels = keras.utils.to_categorical(rng.integers(0, 6, windows), 6)
    model = models.build_model(config, (steps, channels), 6)
    result: dict[str, Any] = {"model": model_name, "shape": f"{steps}x{channels}", "parameters": int(model.count_params())}
    if phase == "train":
        train.compile_model(model, config)
        epoch_seconds: list[float] = []

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                epoch_seconds.append(time.perf_counter() - self.started)

        model.fit(series, labels, batch_size=config.train.batch_size, epochs=3, verbose=0, callbacks=[Timer()])
        result["train_windows_per_second"] = round(windows / float(np.median(epoch_seconds[1:])), 1)
        result["train_batch_size"] = config.train.batch_size
    else:
        one, batch = series[:1], series[:512]
        for _ in range(3):  # warm-up: tracing and first-call allocations
            model.predict_on_batch(one)
            model.predict_on_batch(batch)
        latencies = []
        for _ in range(50):
            started = time.perf_counter()
            model.predict_on_batch(one)
            latencies.append(time.perf_counter() - started)
        batch_seconds = []
        for _ in range(5):
            started = time.perf_counter()
            model.predict_on_batch(batch)
            batch_seconds.append(time.perf_counter() - started)
        result["latency_ms_batch1"] = round(1000 * float(np.median(latencies)), 2)
        result["inference_windows_per_second_batch512"] = round(len(batch) / float(np.median(batch_seconds)), 1)
    result[f"peak_rss_mb_{phase}"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def device_description() -> dict[str, Any]:
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    details = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    return {
        "device": ", ".join(details) if details else f"CPU ({platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores)",
        "backend": keras.backend.backend(),
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
    }


def run_child(phase: str, model: str, shape: tuple[int, int], windows: int, overrides: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "pipeline.bench", "--child", phase, model, str(shape[0]), str(shape[1]), str(windows), *[f"--set={o}" for o in overrides]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"bench {phase} {model} {shape}: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(report: dict[str, Any]) -> str:
    import pandas as pd

    table = pd.DataFrame(report["results"])
    columns = ["model", "shape", "parameters", "train_windows_per_second", "latency_ms_batch1", "inference_windows_per_second_batch512", "peak_rss_mb_train", "peak_rss_mb_infer"]
    header = f"# Benchmark\n\nDevice: {report['device']}; backend {report['backend']}; " + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    return f"{header}\n\nCommand: `{report['command']}`\n\n{table[columns].to_markdown(index=False)}\n"


def main(argv: list[str] | None = None) -> int:
    from pipeline.runtime import import_tensorflow

    import_tensorflow()
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MAIN_MODELS))
    parser.add_argument("--shapes", default=",".join(f"{t}x{c}" for t, c in SHAPES), help="e.g. 5x9,128x9")
    parser.add_argument("--windows", type=int, default=4096, help="synthetic windows per training epoch")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (e.g. train.mixed_precision=true)")
    parser.add_argument("--child", nargs=5, metavar=("PHASE", "MODEL", "T", "C", "WINDOWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        phase, model, steps, channels, windows = args.child
        print(json.dumps(measure(phase, model, int(steps), int(channels), int(windows), args.set)))
        return 0
    root = load_config(None, args.set).path("reports")
    shapes = [tuple(int(v) for v in text.split("x")) for text in args.shapes.split(",")]
    results = []
    for model in args.models.split(","):
        for shape in shapes:
            row = run_child("train", model, shape, args.windows, args.set)
            row.update({k: v for k, v in run_child("infer", model, shape, args.windows, args.set).items() if k not in row})
            print(f"{model:10s} {shape[0]}x{shape[1]}: train {row['train_windows_per_second']:9.1f} win/s, latency {row['latency_ms_batch1']:6.2f} ms, "
                  f"batch-512 {row['inference_windows_per_second_batch512']:9.1f} win/s, RSS train {row['peak_rss_mb_train']:.0f} MB / infer {row['peak_rss_mb_infer']:.0f} MB", flush=True)
            results.append(row)
    report = {**device_description(), "command": " ".join(["python -m pipeline.bench", *(argv if argv is not None else sys.argv[1:])]), "windows": args.windows, "overrides": args.set, "results": results}
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / "bench.json", report)
    with atomic_file(root / "bench.md") as temp:
        temp.write_text(markdown(report))
    print(f"wrote {root / 'bench.json'} and {root / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
