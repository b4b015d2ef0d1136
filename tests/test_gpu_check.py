"""The GPU check's dry run on the CPU (scripts/gpu-check.sh --dry-run): a real wheel installed by
the script, every bench phase on JAX, PyTorch and the plain-PyTorch reference in both precisions,
the training run and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow


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
        timeout=800,
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
