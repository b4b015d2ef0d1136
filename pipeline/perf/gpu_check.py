"""The GPU check, `scripts/gpu-check.sh` (or `python -m pipeline.perf.gpu_check`): everything the project
claims about GPUs, measured in one run of a few minutes on a machine with an NVIDIA GPU.

It is written for a machine like the project's GPU check machine (GUIDE section 7): CUDA builds of
JAX and PyTorch, no TensorFlow, no network, so Keras runs on the JAX and PyTorch backends and make's
install step cannot run (the script installs the wheels it brings along, then calls this module).
Steps, each in its own process:
  1. the device and the versions;
  2. one full training run of the raw competition's documented configuration (`RAW_RUN`), with
     its wall time, epochs and test accuracy;
  3. `python -m pipeline.perf.bench` for the BiLSTM on 128x9 windows on each backend, float32 and
     mixed precision, beside the same BiLSTM written directly in PyTorch (`torch_bilstm`,
     cuDNN), timed the same way; the bench also records which kernel each recurrent layer ran;
  4. reports/gpu_check.json and .md, with the targets (Keras at least 0.8x of plain PyTorch,
     mixed precision not slower than float32) checked.
`--dry-run` does every step on the CPU at a tiny size: what the tests run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.config import load_config
from pipeline.files import atomic_file, write_json_atomic
from pipeline.runs.folder import RunFolder

# The raw competition's documented configuration (README, "The raw competition"): the BiLSTM with
# the noise layer at the test's level, 40 epochs at most, early stopping after 8.
RAW_RUN = ["data.competition=raw", "train.epochs=40", "train.patience=8", "regularization.gaussian_noise=0.5"]
DRY_RUN = ["train.max_train_series=128", "train.epochs=2", "model.units=8", "train.noise_seeds=1", "train.verbose=0"]
KERAS_MODEL, REFERENCE = "bilstm", "torch_bilstm"
TARGET_RATIO = 0.8  # Keras' training throughput against plain PyTorch, same model, batch and precision


def child_environment(backend: str) -> dict[str, str]:
    environment = {**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.setdefault(
        "XLA_PYTHON_CLIENT_PREALLOCATE", "false"
    )  # JAX: take GPU memory as needed, one process after another
    return environment


def run_step(name: str, command: list[str], backend: str, timeout: int) -> tuple[str, float]:
    """Run one step in its own process; its output streams through and is returned for the report."""
    print(f"== {name}: KERAS_BACKEND={backend} {' '.join(command)}", flush=True)
    started = time.perf_counter()
    process = subprocess.run(command, env=child_environment(backend), capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    print(process.stdout, end="", flush=True)
    if process.returncode != 0:
        print(process.stderr, file=sys.stderr, flush=True)
        raise RuntimeError(
            f"{name} failed (exit {process.returncode}): {process.stderr.strip().splitlines()[-1] if process.stderr.strip() else 'no output'}"
        )
    return process.stdout, seconds


def device_facts(backends: list[str]) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    if shutil.which("nvidia-smi"):
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        facts["nvidia_smi"] = query.stdout.strip()
    for backend in backends:
        probe = (
            "import json; from pipeline.runtime import backend_devices, import_keras; keras = "
            "import_keras(); print(json.dumps({**backend_devices(), 'keras': keras.__version__}))"
        )
        output, _ = run_step(f"devices ({backend})", [sys.executable, "-c", probe], backend, 300)
        facts[backend] = json.loads(output.strip().splitlines()[-1])
    return facts


# What the bench measures, in order of importance (a short lease may end before the last):
# (setting, Keras phases, with the PyTorch reference, config overrides).
BENCH_SETTINGS = (
    ("float32", "train,infer,step", True, ["train.mixed_precision=false"]),
    ("mixed_float16", "train,infer", True, ["train.mixed_precision=true"]),
    ("steps_per_execution=16", "train", False, ["train.steps_per_execution=16"]),
    ("batch 512", "train", True, ["train.batch_size=512"]),
)


def bench(
    work: Path,
    backends: list[str],
    windows: int,
    batch_size: int,
    errors: list[str],
    deadline: float,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    if dry_run:
        return dry_run_bench(work, backends, windows, batch_size, errors)
    rows = []
    for number, (setting, phases, with_reference, overrides) in enumerate(BENCH_SETTINGS):
        # The plain PyTorch reference does not depend on Keras' backend: measured once per setting,
        # in a step of its own so that a failing Keras backend cannot take it along.
        for backend, model in ([(backends[0], REFERENCE)] if with_reference else []) + [
            (backend, KERAS_MODEL) for backend in backends
        ]:
            name = f"bench {'plain PyTorch' if model == REFERENCE else backend} {setting}"
            if backend == "torch" and "steps_per_execution" in setting:
                continue  # Keras' PyTorch trainer runs one step per call only
            stem = work / f"bench_{number}_{backend}_{model}"
            command = [
                sys.executable,
                "-m",
                "pipeline.perf.bench",
                "--models",
                model,
                "--shapes",
                "128x9",
                "--windows",
                str(windows),
                "--phases",
                "train,infer" if model == REFERENCE else phases,
                "--output",
                str(stem),
                *(f"--set={item}" for item in (f"train.batch_size={batch_size}", *overrides)),
                *(["--in-process"] if dry_run else []),
            ]
            if time.monotonic() > deadline:
                errors.append(f"{name}: not run, the time budget (--budget-seconds) was spent")
                continue
            try:
                run_step(name, command, backend, 600)
            except (
                RuntimeError,
                subprocess.TimeoutExpired,
            ) as error:  # one broken setting must not cost the others' numbers
                errors.append(f"{name}: {error}")
                continue
            rows += bench_rows(stem, backend, setting)
    return rows


def bench_rows(stem: Path, backend: str, setting: str = "") -> list[dict[str, Any]]:
    """The rows a bench step wrote, named by setting (its precision where not given) and backend."""
    report = json.loads(stem.with_suffix(".json").read_text())
    return [
        {
            **row,
            "setting": setting or row["precision"],
            "backend": "plain PyTorch" if row["model"] == REFERENCE else backend,
            "device": report["device"],
        }
        for row in report["results"]
    ]


def dry_run_bench(
    work: Path, backends: list[str], windows: int, batch_size: int, errors: list[str]
) -> list[dict[str, Any]]:
    """The two precisions only (the other settings are the same steps with other numbers), every
    phase, in one process per backend, the plain PyTorch reference in the first: it checks the
    steps, not the speed, in two processes where the measuring bench starts six."""
    precisions = ",".join(setting for setting, *_rest in BENCH_SETTINGS[:2])
    rows = []
    for index, backend in enumerate(backends):
        stem = work / f"dry_run_{backend}"
        models = ",".join([KERAS_MODEL, *([REFERENCE] if index == 0 else [])])
        command = [
            sys.executable, "-m", "pipeline.perf.bench", "--models", models, "--shapes", "128x9",
            "--windows", str(windows), "--phases", "train,infer,step", "--precisions", precisions,
            "--output", str(stem), f"--set=train.batch_size={batch_size}", "--in-process",
        ]  # fmt: skip
        try:
            run_step(f"bench {backend} {precisions} (dry run)", command, backend, 600)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            errors.append(f"bench {backend}: {error}")
            continue
        rows += bench_rows(stem, backend)
    return rows


def where_the_time_goes(rows: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
    """Per backend: fit against the bare compiled step, fewer Python round trips, bigger batches."""

    def find(backend: str, setting: str, key: str) -> float | None:
        found = [r.get(key) for r in rows if r["backend"] == backend and r["setting"] == setting and r.get(key)]
        return found[0] if found else None

    reference_64, reference_512 = (
        find("plain PyTorch", "float32", "train_windows_per_second"),
        find("plain PyTorch", "batch 512", "train_windows_per_second"),
    )
    lines = []
    for backend in sorted({r["backend"] for r in rows} - {"plain PyTorch"}):
        fit, step = (
            find(backend, "float32", "train_windows_per_second"),
            find(backend, "float32", "step_windows_per_second"),
        )
        chunked, large = (
            find(backend, "steps_per_execution=16", "train_windows_per_second"),
            find(backend, "batch 512", "train_windows_per_second"),
        )
        lines.append(
            {
                "backend": backend,
                f"fit, batch {batch_size}": fit,
                f"compiled step alone, batch {batch_size}": step,
                "share of a fit step outside the model's own step": round(1 - fit / step, 2) if fit and step else None,
                "fit, steps_per_execution=16": chunked,
                "fit, batch 512": large,
                f"vs plain PyTorch, batch {batch_size}": round(fit / reference_64, 2) if fit and reference_64 else None,
                f"compiled step vs plain PyTorch, batch {batch_size}": round(step / reference_64, 2)
                if step and reference_64
                else None,
                "vs plain PyTorch, batch 512": round(large / reference_512, 2) if large and reference_512 else None,
            }
        )
    return lines


def training_run(root: Path, backend: str, overrides: list[str]) -> dict[str, Any]:
    config_overrides = [f"paths.root={root}", *RAW_RUN, *overrides]
    command = [
        sys.executable,
        "-m",
        "pipeline.stages.train",
        "--force",
        *(f"--set={item}" for item in config_overrides),
    ]
    output, seconds = run_step(f"train raw ({backend})", command, backend, 600)
    run_dir = root / "runs" / next(line.split()[1] for line in output.splitlines() if line.startswith("done "))
    metrics, environment = RunFolder(run_dir).metrics(), RunFolder(run_dir).environment()
    result = {
        "run_id": run_dir.name,
        "backend": backend,
        "overrides": config_overrides[1:],
        "wall_seconds": round(seconds, 1),
        "train_seconds": metrics["train_seconds"],
        "epochs_run": metrics["epochs_run"],
        "seconds_per_epoch": round(metrics["train_seconds"] / metrics["epochs_run"], 2),
        "best_epoch": metrics["best_epoch"],
        "validation": {level: scores["mean"] for level, scores in metrics["validation"].items()},
        "gpus": environment.get("gpus", []),
    }
    if "test" in metrics:
        result["test"] = {level: scores["mean"] for level, scores in metrics["test"]["noise_levels"].items()}
        result["test_file"] = metrics["test"]["competition_file"]
    return result


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keras/plain-PyTorch throughput ratios and mixed/float32 ratios, with pass or miss."""

    def throughput(backend: str, precision: str) -> float | None:
        found = [
            r["train_windows_per_second"]
            for r in rows
            if r["backend"] == backend and r["precision"] == precision and r["setting"] in ("float32", "mixed_float16")
        ]
        return found[0] if found else None

    checks = []
    for backend in sorted({r["backend"] for r in rows} - {"plain PyTorch"}):
        for precision in ("float32", "mixed_float16"):
            keras_speed, reference = throughput(backend, precision), throughput("plain PyTorch", precision)
            if keras_speed and reference:
                ratio = keras_speed / reference
                checks.append(
                    {
                        "check": f"Keras {backend} / plain PyTorch training throughput, {precision}",
                        "value": round(ratio, 2),
                        "target": f">= {TARGET_RATIO}",
                        "met": ratio >= TARGET_RATIO,
                    }
                )
        full, mixed = throughput(backend, "float32"), throughput(backend, "mixed_float16")
        if full and mixed:
            checks.append(
                {
                    "check": f"Keras {backend}: mixed precision / float32 training throughput",
                    "value": round(mixed / full, 2),
                    "target": ">= 1.0",
                    "met": mixed >= full,
                }
            )
    full, mixed = throughput("plain PyTorch", "float32"), throughput("plain PyTorch", "mixed_float16")
    if full and mixed:
        checks.append(
            {
                "check": "plain PyTorch: mixed precision / float32 training throughput (for reference)",
                "value": round(mixed / full, 2),
                "target": "",
                "met": None,
            }
        )
    return checks


def markdown(report: dict[str, Any]) -> str:
    import pandas as pd

    lines = [
        f"# GPU check{' (dry run on the CPU)' if report['dry_run'] else ''}",
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    facts = report.get("device", {})
    if not facts:
        return "\n".join(lines)
    lines.append(
        f"Device: {facts.get('nvidia_smi') or 'no nvidia-smi'}; python {facts['python']}; "
        + "; ".join(
            f"{name} {facts[name]['backend_version']} (keras {facts[name]['keras']}, GPUs: {', '.join(facts[name]['gpus']) or 'none'})"
            for name in report["backends"]
        )
    )
    columns = [
        "setting",
        "backend",
        "model",
        "precision",
        "train_batch_size",
        "train_windows_per_second",
        "step_windows_per_second",
        "latency_ms_batch1",
        "inference_windows_per_second_batch512",
        "peak_rss_mb_train",
        "kernel_paths",
    ]
    if report.get("bench"):
        table = pd.DataFrame(report["bench"])
        lines += [
            "",
            "## Throughput (BiLSTM, 2 x 64 units, 128 x 9 windows; windows per second)",
            "",
            table[[c for c in columns if c in table.columns]].to_markdown(index=False),
            "",
        ]
        lines += [
            "## Targets",
            "",
            pd.DataFrame(report["targets"]).to_markdown(index=False) if report["targets"] else "(none measured)",
            "",
        ]
        lines += [
            "## Where the time goes",
            "",
            pd.DataFrame(report["time"]).set_index("backend").T.to_markdown() if report["time"] else "(not measured)",
            "",
        ]
    if report["errors"]:
        lines += ["## Errors", "", *(f"- {error}" for error in report["errors"]), ""]
    if "training" not in report:
        return "\n".join(lines)
    run = report["training"]
    lines += [
        "## Training run of the raw competition",
        "",
        f"`{' '.join(run['overrides'])}` on KERAS_BACKEND={run['backend']} ({', '.join(run['gpus']) or 'CPU'}): "
        f"{run['train_seconds']} s of training ({run['wall_seconds']} s wall, process start included), {run['epochs_run']} epochs "
        f"({run['seconds_per_epoch']} s each), best epoch {run['best_epoch']}.",
        "",
    ]
    scores = {"validation": run["validation"], **({"test": run["test"]} if "test" in run else {})}
    lines += [pd.DataFrame(scores).T.to_markdown(floatfmt=".3f"), ""]
    if "test_file" in run:
        lines += [f"Competition test file: {run['test_file']:.3f}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.perf.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="every step on the CPU at a tiny size (what the tests run)"
    )
    parser.add_argument("--backends", default="jax,torch", help="Keras backends to bench (comma-separated)")
    parser.add_argument("--train-backend", default="jax", help="the backend of the training run")
    parser.add_argument("--root", default="", help="project root holding data/processed/raw (default: this project)")
    parser.add_argument("--output", default="", help="path without extension (default: <reports>/gpu_check)")
    parser.add_argument(
        "--windows", type=int, default=0, help="synthetic windows per bench epoch (default 16384; 128 in a dry run)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="bench batch size (the training default)")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=420,
        help="start no bench step after this many seconds (the check must fit a short lease)",
    )
    args = parser.parse_args(argv)
    config = load_config(None, [f"paths.root={args.root}"] if args.root else [])
    if not (config.processed_dir / "raw" / "train.npz").is_file():
        print(
            f"error: {config.processed_dir / 'raw'}: no raw competition; run `make data prepare` first (or pass --root)",
            file=sys.stderr,
        )
        return 1
    backends = [name for name in args.backends.split(",") if name]
    output = Path(args.output) if args.output else config.path("reports") / "gpu_check"
    output.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "command": " ".join(["python -m pipeline.perf.gpu_check", *(argv if argv is not None else sys.argv[1:])]),
        "backends": backends,
        "errors": [],
    }

    def save() -> None:  # after every step: a run cut short keeps what it measured
        write_json_atomic(output.with_suffix(".json"), report)
        with atomic_file(output.with_suffix(".md")) as temp:
            temp.write_text(markdown(report))

    started = time.monotonic()
    report["device"] = device_facts(backends)
    if not args.dry_run and not any(report["device"][name]["gpus"] for name in backends):
        print(
            "error: no GPU visible to " + " or ".join(backends) + " (use --dry-run to check the steps on a CPU)",
            file=sys.stderr,
        )
        return 1
    try:  # the training run first: the one number the CPU comparison needs
        report["training"] = training_run(config.root, args.train_backend, DRY_RUN if args.dry_run else [])
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        report["errors"].append(f"training run: {error}")
    save()
    with tempfile.TemporaryDirectory() as work:
        report["bench"] = bench(
            Path(work),
            backends,
            args.windows or (128 if args.dry_run else 8192),
            args.batch_size,
            report["errors"],
            started + args.budget_seconds,
            args.dry_run,
        )
    report["targets"] = targets(report["bench"])
    report["time"] = where_the_time_goes(report["bench"], args.batch_size)
    save()
    print(output.with_suffix(".md").read_text())
    print(f"wrote {output.with_suffix('.json')} and {output.with_suffix('.md')}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
