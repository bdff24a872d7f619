"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class ValueDetectError(Exception):
    """Base class for problems caused by input, configuration or environment, not by a bug."""


class InputError(ValueDetectError):
    """A file or value given by the user is malformed; the message names where and what."""

    def __init__(self, problem: str, path: str | Path | None = None, line: int | None = None):
        self.problem = problem
        self.path = Path(path) if path is not None else None
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + problem)


class ConfigError(ValueDetectError):
    """A configuration file or option is invalid."""
