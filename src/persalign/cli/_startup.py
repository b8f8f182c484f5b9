"""The first thing the ``persalign`` command does: Ctrl-C while it is still starting.

    import persalign.cli   # cli/__init__.py imports this module before any command module

Importing the commands' modules (torch, transformers, ray: several seconds) happens before
``persalign.cli.main`` can install its own SIGINT handler. When this process was started as the
command (the ``persalign`` script, or ``python -m persalign.cli``), a Ctrl-C in that window
prints ``interrupted`` and exits 130 at once, as one during a command does, instead of a
traceback from inside an import; nothing has been written yet, so there is nothing to clean up.
Imported as a library (tests, a notebook), this module changes nothing.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from persalign.io import interrupt_point

INTERRUPTED = 130


def started_as_command(argv: list[str] | None = None) -> bool:
    """True in the ``persalign`` script, or while ``python -m persalign.cli`` locates its module
    (Python sets ``sys.argv[0]`` to "-m" until then)."""
    argv = sys.argv if argv is None else argv
    first = argv[0] if argv else ""
    return first == "-m" or Path(first).stem == "persalign"


def _interrupted_while_starting(signum: int, frame: object) -> None:
    os.write(2, b"interrupted\n")
    os._exit(INTERRUPTED)


if started_as_command():
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    interrupt_point("starting")  # tests: a Ctrl-C while the command modules are imported
