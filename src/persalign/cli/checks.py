"""Options and checks that several commands share, run before any model loads.

    verify: VerifyOption = True                       # --verify/--no-verify on a command
    check_writable(out, "--out")                      # ConfigError unless out can be written
    check_out_file(out, "a JSON file")                # and not a folder where a file goes

``check_writable`` looks at the nearest folder that exists on the way to ``out`` (the folder a
temporary file or folder is made in): a regular file there, or a folder this process may not
write (read-only, immutable, another owner), is one ConfigError naming the option. As root,
permission bits do not stop a write, so a 0o555 folder passes, as the write itself would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from persalign.errors import ConfigError

VerifyOption = Annotated[
    bool,
    typer.Option(
        "--verify/--no-verify",
        help="Check every benchmark file against its manifest's sha256 (--no-verify: a folder "
        "edited by hand).",
    ),
]


def check_writable(path: Path, option: str = "--out") -> None:
    """ConfigError unless ``path`` (an output file or folder) can be created or replaced."""
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{option} {path}: cannot write there (not writable)")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: cannot write there ({parent} is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write there ({parent} is not writable)")


def check_out_file(path: Path, what: str = "a file", option: str = "--out") -> None:
    """ConfigError if ``path`` (an output file) is a folder, or cannot be written."""
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; expected {what} to write")
    check_writable(path, option)
