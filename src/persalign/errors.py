"""Errors that the command line reports as one clear line, without a traceback.

    >>> raise DataError("bad JSON", path="train.jsonl", line=3)
    DataError: train.jsonl:3: bad JSON

Library code raises these for anything the *user* can fix (a malformed file, a missing field, an
unknown name); programming errors stay ordinary exceptions.
"""

from __future__ import annotations

from pathlib import Path


class PersalignError(Exception):
    """Base class: something the user can fix. ``str()`` is the whole message."""


class DataError(PersalignError):
    """A problem with an input file, located by path and (where known) line number."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(f"{where}{message}")


class ConfigError(PersalignError):
    """An invalid option, config key or value."""


class DownloadError(PersalignError):
    """A download failed, or returned something that is not the expected data."""
