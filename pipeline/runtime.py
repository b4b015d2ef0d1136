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

import contextlib
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError, UserError

if TYPE_CHECKING:
    from pipeline.config import Config

BACKENDS = ("tensorflow", "jax", "torch")

BOILERPLATE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I0000 .*"
    r"|.*cpu_feature_guard.*|To enable the following instructions:.*)$"
)
# "failed call to cuInit" is noise on a machine without an NVIDIA driver, and the one line that
# explains a CPU fallback on a machine with one: it is hidden only where no driver is present.
CUDA_INIT = re.compile(r"^E0000 .*cuInit.*$")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ru_maxrss in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class PeakMemory:
    """This process's peak resident memory while a `with` block runs, in GiB (`.gib` after the block;
    its threads included, so numba's, torch's and joblib's threading backend count). Linux keeps the
    high-water mark in VmHWM and resets it when 5 is written to /proc/self/clear_refs, so one process
    can measure fit after fit; where that is not available `.gib` stays None."""

    STATUS, RESET = "/proc/self/status", "/proc/self/clear_refs"

    def __enter__(self) -> PeakMemory:
        self.gib: float | None = None
        try:
            with open(self.RESET, "w") as reset:
                reset.write("5")
            self.available = True
        except OSError:
            self.available = False
        return self

    def __exit__(self, *exception: object) -> None:
        if self.available:
            with open(self.STATUS) as status:
                line = next(line for line in status if line.startswith("VmHWM:"))
            self.gib = round(int(line.split()[1]) / 1024**2, 2)  # the kernel reports kB


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

    gpus = (
        [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        "backend": name,
        "backend_version": torch.__version__,
        "devices": ["cpu", *(f"cuda:{i}" for i in range(len(gpus)))],
        "gpus": gpus,
    }


# ---- devices, determinism and what a run ran on (the device set-up of `make train`) ----------------


def split_cpu(devices: int) -> None:
    """Split the CPU into `devices` logical devices (to test multi-device training without a GPU).

    It must happen before the backend initializes its devices; a process where that already
    happened with another count is refused rather than silently trained on one replica."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * devices)
        except RuntimeError:
            pass  # initialized earlier in this process: fine if it already has the wanted split (checked below)
        found = len(tf.config.list_logical_devices("CPU"))
    elif backend == "jax":
        import jax

        try:
            jax.config.update("jax_num_cpu_devices", devices)
        except RuntimeError:
            pass  # backends already initialized: checked below
        found = len(jax.devices("cpu"))
    else:
        raise BackendError(
            f"train.cpu_devices needs KERAS_BACKEND=tensorflow or jax; this process runs KERAS_BACKEND={backend}"
        )
    if found != devices:
        raise ConfigError(
            f"train.cpu_devices={devices} cannot take effect: this process already set up {found} CPU device(s); run the stage in a fresh process"
        )


def setup_devices(config: Config) -> None:
    """Split the CPU if asked (before any backend op), seed everything, set the precision policy."""
    import keras

    train = config.train
    if train.cpu_devices > 1:
        split_cpu(train.cpu_devices)
    keras.utils.set_random_seed(train.seed)
    if train.deterministic:
        require_backend("train.deterministic (TensorFlow's op determinism)", "tensorflow")
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if train.mixed_precision else "float32")


def distribution_scope(config: Config) -> tuple[Callable[[], Any], int]:
    """(a function giving the context to build, compile and fit in, replicas): data parallelism over the visible devices.

    `mirrored` is TensorFlow's MirroredStrategy; `data_parallel` is Keras' own distribution API
    (`keras.distribution.DataParallel`, JAX backend). The batch size stays global in both."""
    distribute = config.train.distribute
    if distribute == "mirrored":
        require_backend("train.distribute=mirrored (tf.distribute.MirroredStrategy)", "tensorflow")
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        return strategy.scope, strategy.num_replicas_in_sync
    if distribute == "data_parallel":
        require_backend("train.distribute=data_parallel (keras.distribution.DataParallel)", "jax")
        import keras

        distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
        return distribution.scope, len(distribution.device_mesh.devices.flatten())
    return contextlib.nullcontext, 1


def environment() -> dict[str, Any]:
    import keras
    import numpy as np
    import pandas as pd
    import sklearn

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": {
            "keras": keras.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "scikit-learn": sklearn.__version__,
        },
        **backend_devices(),
        "precision_policy": keras.mixed_precision.global_policy().name,
    }
