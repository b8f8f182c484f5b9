"""What the commands print: one console, per-user accuracy tables, JSON results, and the
generation files they read.

    stdout.print("...")                                  # the commands' standard output
    print_accuracy("RM accuracy of runs/lore", result)   # a per-user accuracy table
    emit(result, as_json=True, out=Path("acc.json"))     # write and/or print a result as JSON
    gens = read_generations(Path("gen/args.jsonl"))      # persalign generate output, checked
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from persalign.errors import DataError
from persalign.io import read_jsonl, write_json

log = logging.getLogger(__name__)
stdout = Console(highlight=False)


def read_generations(path: Path) -> list[dict[str, Any]]:
    """The records of a ``persalign generate`` file; DataError (file:line) on any bad line."""
    out, seen = [], {}
    for line_no, obj in read_jsonl(path, required=("user", "id", "text"), kind="generation"):
        if not isinstance(obj["text"], str):
            raise DataError(
                f"text must be a string, got {type(obj['text']).__name__}", path, line_no
            )
        key = (str(obj["user"]), str(obj["id"]))
        if key in seen:
            raise DataError(
                f"duplicate generation for user {key[0]!r}, id {key[1]!r} (first on line "
                f"{seen[key]})",
                path,
                line_no,
            )
        seen[key] = line_no
        out.append(obj)
    return out


def emit(result: dict[str, Any], as_json: bool, out: Path | None) -> bool:
    """Write ``result`` to ``out`` if given, print it as JSON if asked; True when printed."""
    if out is not None:
        write_json(out, result)
        log.info("wrote %s", out)
    if as_json:
        stdout.print_json(json.dumps(result, allow_nan=True))
    return as_json


def print_accuracy(title: str, result: dict) -> None:
    """A per-user accuracy result (metrics.ranking.per_user_accuracy) as a table and a summary."""
    table = Table(title=title, title_justify="left")
    table.add_column("user")
    table.add_column("accuracy", justify="right")
    for user, acc in result["per_user"].items():
        table.add_row(user, f"{acc:.3f}")
    stdout.print(table)
    if result["mean"] is None:  # per_user_accuracy on no pairs: never a number
        status = result.get("status", "no pairs")
        stdout.print(f"{status}: no accuracy over {result['pairs']} pairs")
        return
    stdout.print(
        f"mean over {result['users']} users: {result['mean']:.4f} "
        f"(pooled over {result['pairs']} pairs: {result['pooled']:.4f})"
    )
