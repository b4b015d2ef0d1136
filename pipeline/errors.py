"""The errors a user can fix: each carries a one-line message naming the file or setting and the problem.

`pipeline.cli.run_stage` prints these (and a missing or unreadable file) as `error: <message>` with
exit code 1; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """An expected problem with the user's input, settings or environment."""


class ConfigError(UserError):
    """A configuration value that is unknown, of the wrong type or out of range."""


class DataError(UserError):
    """Input data that cannot be used; the message names the file and the problem."""


class ExportError(UserError):
    """A model whose exported file would not give the model's answers (nothing is written)."""
