"""Console logging and progress for the command line and long-running library calls.

    setup_logging(verbosity=1)          # INFO and up, rendered by rich on stderr
    with progress_bar() as progress:
        task = progress.add_task("embedding", total=len(texts))
        progress.advance(task, 64)

The library itself only logs (``logging.getLogger(__name__)``); applications decide where it goes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr = Console(stderr=True, highlight=False)
T = TypeVar("T")


def setup_logging(verbosity: int = 1) -> None:
    """0: warnings only, 1: info, 2+: debug (persalign's loggers; others stay at warnings)."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = RichHandler(console=stderr, show_path=False, markup=False, rich_tracebacks=False)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("persalign").setLevel(level)


def progress_bar(transient: bool = False, show: bool = True) -> Progress:
    """A rich progress bar on stderr with count, elapsed and remaining time (none unless show)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=transient,
        disable=not show,
    )


def track(
    items: Iterable[T], description: str, total: int | None = None, show: bool = True
) -> Iterator[T]:
    """``items``, with a transient progress bar on stderr when ``show`` (stdout stays clean)."""
    if not show:
        yield from items
        return
    with progress_bar(transient=True) as bar:
        yield from bar.track(items, total=total, description=description)
