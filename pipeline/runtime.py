"""Importing TensorFlow without its start-up noise.

TensorFlow's C++ runtime prints INFO lines (oneDNN, "Could not find cuda drivers") to the process's
stderr before its logging is configured; TF_CPP_MIN_LOG_LEVEL does not silence them. CLIs call
`import_tensorflow()` first: it routes file descriptor 2 to a temp file during the import and
replays every line that is not one of those known INFO messages, so real errors still show.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from typing import Any

BOILERPLATE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I0000 .*"
    r"|E0000 .*cuInit.*"
    r"|.*cpu_feature_guard.*|To enable the following instructions:.*)$"
)


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
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip() and not BOILERPLATE.match(line):
                    print(line, file=sys.stderr)
    return tensorflow
