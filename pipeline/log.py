"""What the stages tell the user as they work goes through one logger, `har`, so it can be quieted.

Info lines (progress, "wrote ...", each epoch's line) go to stdout and warnings to stderr, each as the
bare message, so a terminal and a log file read as they always did. Quiet them:
- from make or a shell: `QUIET=1` (make) or `HAR_QUIET=1` (the environment): warnings and errors only;
- in a notebook: `logging.getLogger("har").setLevel(logging.WARNING)`.
What a command exists to print (a table of runs, a score, a comparison, an error line) stays a plain
print: quiet hides the chatter, not the answer.
"""

from __future__ import annotations

import logging
import os
import sys

QUIET = "HAR_QUIET"


class CurrentStream(logging.StreamHandler):
    """A handler writing to whatever sys.stdout (or sys.stderr) is when a message is emitted, so a
    redirection (contextlib.redirect_stdout, pytest's capture, a notebook's cell) gets the message."""

    def __init__(self, name: str):
        super().__init__()
        self.name_of_stream = name

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return getattr(sys, self.name_of_stream)

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def make_logger() -> logging.Logger:
    logger = logging.getLogger("har")
    if not getattr(logger, "configured_by_pipeline", False):
        stdout, stderr = CurrentStream("stdout"), CurrentStream("stderr")
        stdout.addFilter(lambda record: record.levelno < logging.WARNING)
        stderr.setLevel(logging.WARNING)
        for handler in (stdout, stderr):
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
        logger.propagate = False  # the root logger's handlers (a notebook's, pytest's) would print it twice
        logger.setLevel(logging.WARNING if os.environ.get(QUIET, "") not in ("", "0") else logging.INFO)
        logger.configured_by_pipeline = True  # type: ignore[attr-defined]
    return logger


log = make_logger()
