"""Errors that the command line reports as one clear line, without a traceback.

    raise DataError("bad JSON", path="train.jsonl", line=3)
    # DataError: train.jsonl:3: bad JSON

Library code raises these for anything the *user* can fix (a malformed file, a missing field, an
unknown name); programming errors stay ordinary exceptions.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


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


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line for a pydantic error: ``key.path: problem`` for each problem, ``; ``-joined."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        if err["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key")
        elif err["type"] == "missing":
            problems.append(f"{key}: missing (required)")
        else:
            problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(problems)


def validated(model: type[M], data: Mapping[str, Any], where: str = "", *, head: str = "") -> M:
    """``model(**data)``, or a ConfigError naming every bad key (``head: where.key: problem``).

    The one place a pydantic ValidationError becomes a user-facing ConfigError.
    """
    try:
        return model(**data)
    except ValidationError as exc:
        message = describe_validation_error(exc, prefix=where)
        raise ConfigError(f"{head}: {message}" if head else message) from None


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to a mistyped ``name``, or ""."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""
