"""The ``persalign`` command line.

    persalign ls [datasets|...]                   what is registered
    persalign data build pref-acl --source DIR --out DIR [--seed S] [--min-items N] ...
    persalign data stats DIR [--json]
    persalign demo [--out DIR]                    the embedded default (configs/demo.yaml)

Errors the user can fix (bad files, unknown names, bad options) print one line and exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from persalign.errors import ConfigError, PersalignError
from persalign.logs import setup_logging, stderr

app = typer.Typer(
    help="persalign: personalized alignment, evaluated against what users actually write.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Build and inspect per-user preference benchmarks.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
stdout = Console(highlight=False)

# kind -> (module, attribute) of its registry; imported only when listed.
REGISTRIES = {
    "datasets": ("persalign.data", "BUILDERS"),
}


@app.callback()
def _global(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logs.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
) -> None:
    setup_logging(0 if quiet else 1 + verbose)


@app.command("ls")
def list_registered(
    kind: Annotated[str | None, typer.Argument(help="datasets (more as they land)")] = None,
) -> None:
    """List registered datasets (and later methods, decoders, metrics) with a one-line summary."""
    import importlib

    kinds = [kind] if kind else list(REGISTRIES)
    for name in kinds:
        if name not in REGISTRIES:
            raise ConfigError(f"unknown kind {name!r}; choose from {', '.join(REGISTRIES)}")
        module, attr = REGISTRIES[name]
        registry = getattr(importlib.import_module(module), attr)
        table = Table(title=name, show_header=False, box=None, title_justify="left")
        for entry in registry.entries():
            table.add_row(entry.name, entry.summary)
        stdout.print(table)


@data_app.command("build")
def data_build(
    name: Annotated[str, typer.Argument(help="tldr | prism | pref-lamp | pref-acl")],
    out: Annotated[Path, typer.Option(help="Output folder for the benchmark.")],
    source: Annotated[
        str | None, typer.Option(help="Local folder/file; default: hub or download.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    train_users: Annotated[int | None, typer.Option(help="Number of train users.")] = None,
    adapt_users: Annotated[int | None, typer.Option(help="Number of adaptation users.")] = None,
    min_items: Annotated[
        int | None, typer.Option(help="Skip users with fewer items (default: per dataset).")
    ] = None,
    max_items: Annotated[int | None, typer.Option(help="Cap items per user.")] = None,
    support_fraction: Annotated[float, typer.Option(help="Support share of items.")] = 0.5,
    split: Annotated[str, typer.Option(help="Support/query split: random | time.")] = "random",
    split_file: Annotated[
        str | None, typer.Option(help="JSON of train/adapt user ids (PAL's seen/unseen).")
    ] = None,
    negatives_top_k: Annotated[int, typer.Option(help="Hard negatives: sample from top-k.")] = 10,
    embedder: Annotated[str, typer.Option(help="Embedder for negatives.")] = (
        "bundled:all-minilm-l6-v2"
    ),
    include: Annotated[
        list[str] | None, typer.Option(help="Glob of source files to read (repeatable).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.")] = 64,
) -> None:
    """Build a benchmark folder: manifest.json, train/support/query/completions.jsonl."""
    from persalign.data import BUILDERS, BuildOptions

    builder = BUILDERS.get(name)
    options = BuildOptions(
        source=source,
        seed=seed,
        train_users=train_users,
        adapt_users=adapt_users,
        min_items=min_items,
        max_items=max_items,
        support_fraction=support_fraction,
        split=split,
        split_file=split_file,
        negatives_top_k=negatives_top_k,
        embedder=embedder,
        include=tuple(include or ()),
        batch_size=batch_size,
    )
    manifest = builder(options, out)
    counts = manifest["counts"]
    stdout.print(
        f"wrote {out}: {counts['train_users']} train users ({counts['train_preferences']} prefs), "
        f"{counts['adapt_users']} adaptation users ({counts['support_preferences']} support, "
        f"{counts['query_preferences']} query), {counts['completions']} completions"
    )


@data_app.command("stats")
def data_stats(
    path: Annotated[Path, typer.Argument(help="A benchmark folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Users, preferences per user (min/median/mean/max), prompts and completions."""
    from persalign.data.io import load_benchmark
    from persalign.data.stats import benchmark_stats

    stats = benchmark_stats(load_benchmark(path))
    if as_json:
        stdout.print_json(json.dumps(stats))
        return
    show_stats(stats)


def show_stats(stats: dict) -> None:
    table = Table(title=f"benchmark {stats['name']}", title_justify="left")
    table.add_column("")
    for col in ("users", "prefs", "min", "median", "mean", "max"):
        table.add_column(col, justify="right")
    for group in ("train", "adapt"):
        d = stats[group]["preferences_per_user"]
        table.add_row(
            group,
            str(stats[group]["users"]),
            str(stats[group]["preferences"]),
            *(str(d[k]) for k in ("min", "median", "mean", "max")),
        )
    stdout.print(table)
    stdout.print(f"prompts: {stats['prompts']}   completions: {stats['completions']}")
    for reason, count in stats["skipped"].items():
        stdout.print(f"skipped {count}: {reason}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo writes.")] = Path("runs/demo"),
    config: Annotated[
        Path | None, typer.Option(help="Config file (default: configs/demo.yaml).")
    ] = None,
) -> None:
    """The embedded default: a small Pref-ACL built from PERSALIGN_ACL_DIR, then its stats."""
    from persalign.demo import run_demo

    stats = run_demo(out, config)
    show_stats(stats)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app, turning user errors into one line and exit code 2."""
    try:
        app(args=argv, prog_name="persalign")
    except PersalignError as exc:
        stderr.print(f"error: {exc}", markup=False)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        stderr.print("interrupted", markup=False)
        raise SystemExit(130) from None


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
