"""User-facing errors. The CLI prints these as one line and exits non-zero; nothing else is caught."""

from __future__ import annotations


class RmtensionError(Exception):
    """Base class: an error whose message is meant for the user, not a traceback."""

    exit_code = 2


class DataError(RmtensionError):
    """A data file is malformed. Names the file, the line (or key) and the reason."""

    def __init__(self, path: str, line: int | None, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class ConfigError(RmtensionError):
    """A config key is unknown, mistyped, out of range or contradicts another."""


class ArtifactError(RmtensionError):
    """A file in the run directory is missing, truncated or does not match its manifest."""


class TrainingDiverged(RmtensionError):
    """The loss or a reward became NaN/inf; names the step."""
