"""Errors shown to the user: each names what is wrong, where, and the fix."""

from __future__ import annotations


class CoherenceError(Exception):
    """An error that will be displayed to the user as one line, without a traceback."""


class PackError(CoherenceError):
    """A cultural pack is malformed: names the file, the key path and the fix."""

    def __init__(self, file: str, key: str, problem: str, fix: str) -> None:
        self.file, self.key, self.problem, self.fix = file, key, problem, fix
        super().__init__(f"{file}: {key}: {problem} (fix: {fix})")


class ConfigError(CoherenceError):
    """A run config is malformed."""


class ModelError(CoherenceError):
    """A model could not be reached or used; the message is shown to the user."""


class FatalProviderError(ModelError):
    """A provider error that retrying cannot fix (bad key, unknown model): stops the run at once."""
