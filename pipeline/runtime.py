"""The Keras backend of this process, and importing it without start-up noise.

Keras 3 runs the same models on TensorFlow (the default here), JAX and PyTorch; the backend is
chosen the Keras way, by the `KERAS_BACKEND` environment variable, before `keras` is imported
(make passes it through). `import_keras()` is the one place that imports Keras for a stage.

TensorFlow's C++ runtime prints INFO lines (oneDNN, CPU features) to the process's stderr before
its logging is configured; TF_CPP_MIN_LOG_LEVEL does not silence them. On the TensorFlow backend
`import_keras()` first imports TensorFlow with fd 2 routed to a temp file and replays every line
that is not one of those known INFO messages, so real errors (and the CUDA line that explains a
CPU fallback on a GPU machine) still show. Keras itself imports TensorFlow on every backend when
it is installed; where it is not (the GPU check machine), the JAX and PyTorch backends run without it.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from typing import Any

from pipeline.errors import UserError

BACKENDS = ("tensorflow", "jax", "torch")

BOILERPLATE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I0000 .*"
    r"|.*cpu_feature_guard.*|To enable the following instructions:.*)$"
)
# "failed call to cuInit" is noise on a machine without an NVIDIA driver, and the one line that
# explains a CPU fallback on a machine with one: it is hidden only where no driver is present.
CUDA_INIT = re.compile(r"^E0000 .*cuInit.*$")


def nvidia_driver_present() -> bool:
    return os.path.exists("/proc/driver/nvidia")


def is_start_up_noise(line: str, driver_present: bool) -> bool:
    """Whether a line TensorFlow printed while importing is known noise on this machine."""
    return not line.strip() or bool(BOILERPLATE.match(line)) or (bool(CUDA_INIT.match(line)) and not driver_present)


class BackendError(UserError):
    """A feature asked for on a Keras backend that does not have it."""


def backend_name() -> str:
    """The Keras backend this process uses (or will use once Keras is imported)."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    name = os.environ.get("KERAS_BACKEND", "tensorflow") or "tensorflow"
    if name not in BACKENDS:
        raise BackendError(f"KERAS_BACKEND={name!r} is not supported here (use one of {', '.join(BACKENDS)})")
    return name


def require_backend(feature: str, *allowed: str) -> None:
    """Refuse `feature` with one line when this process runs another backend."""
    name = backend_name()
    if name not in allowed:
        wanted = " or ".join(f"KERAS_BACKEND={b}" for b in allowed)
        raise BackendError(f"{feature} needs {wanted}; this process runs KERAS_BACKEND={name}")


def import_tensorflow() -> Any:
    """`import tensorflow` with its start-up INFO lines filtered out; other stderr output is kept."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            driver_present = nvidia_driver_present()
            for line in captured.read().decode(errors="replace").splitlines():
                if not is_start_up_noise(line, driver_present):
                    print(line, file=sys.stderr)
    return tensorflow


def import_keras() -> Any:
    """`import keras` on the configured backend, TensorFlow imported quietly first wherever it is installed:
    Keras imports it on every backend when it can (its serialization checks for `tf.TensorShape`), and
    would then let its start-up noise through."""
    backend_name()  # an unknown KERAS_BACKEND is refused in one line before Keras raises on it
    if tensorflow_available():
        # tf.function's retracing warning fires whenever several models predict in one process
        # (cross-validation, ensembles, evaluation): advice for TensorFlow developers, not news to a user
        import_tensorflow().get_logger().setLevel("ERROR")
    import keras

    return keras


def tensorflow_available() -> bool:
    """Whether TensorFlow is installed (it is not on the GPU check machine)."""
    import importlib.util

    return "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is not None


def backend_devices() -> dict[str, Any]:
    """The backend, its version, its devices and the names of its GPUs (empty list on a CPU)."""
    name = backend_name()
    if name == "tensorflow":
        tf = import_tensorflow()
        gpus = tf.config.list_physical_devices("GPU")
        return {
            "backend": name,
            "backend_version": tf.__version__,
            "devices": [device.name for device in tf.config.list_logical_devices()],
            "gpus": [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus],
        }
    if name == "jax":
        import jax

        devices = jax.devices()
        return {
            "backend": name,
            "backend_version": jax.__version__,
            "devices": [str(device) for device in devices],
            "gpus": [device.device_kind for device in devices if device.platform == "gpu"],
        }
    import torch

    gpus = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"backend": name, "backend_version": torch.__version__, "devices": ["cpu", *(f"cuda:{i}" for i in range(len(gpus)))], "gpus": gpus}
