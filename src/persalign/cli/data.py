"""``persalign data ...``: build and inspect per-user preference benchmarks.

persalign data build pref-acl --source ../shared/data/acl_anthology --out out/pref-acl
persalign data build sim --from out/pref-acl --users 64 --groups 4 --noise 1 --out out/sim
persalign data stats out/pref-acl [--json] [--no-verify]
persalign data verify out/pref-acl          # every file that differs from the manifest; exit 2
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from persalign.cli.checks import VerifyOption, check_writable
from persalign.cli.output import stdout
from persalign.data import BUILDERS, BuildOptions
from persalign.data.benchmark_folder import benchmark_differences, load_benchmark
from persalign.data.stats import benchmark_stats
from persalign.errors import ConfigError, DataError
from persalign.io import folder_in_place


def data_build(
    name: Annotated[str, typer.Argument(help="tldr | prism | pref-lamp | pref-acl | jsonl | sim")],
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
    max_query: Annotated[
        int | None, typer.Option(help="Cap query items per adaptation user (seeded sample).")
    ] = None,
    support_fraction: Annotated[float, typer.Option(help="Support share of items.")] = 0.5,
    split: Annotated[str, typer.Option(help="Support/query split: random | time.")] = "random",
    split_file: Annotated[
        str | None, typer.Option(help="JSON of train/adapt user ids (PAL's seen/unseen).")
    ] = None,
    completions: Annotated[
        str | None,
        typer.Option(help="jsonl: the users' own responses, {user, prompt, completion} lines."),
    ] = None,
    negatives_top_k: Annotated[int, typer.Option(help="Hard negatives: sample from top-k.")] = 10,
    embedder: Annotated[str, typer.Option(help="Embedder for negatives.")] = (
        "bundled:all-minilm-l6-v2"
    ),
    negative_pool: Annotated[
        str, typer.Option(help="Negatives from: users (their papers) | all (whole source).")
    ] = "users",
    embed_max_tokens: Annotated[int, typer.Option(help="Embed abstracts up to N tokens.")] = 512,
    include: Annotated[
        list[str] | None, typer.Option(help="Glob of source files to read (repeatable).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.")] = 64,
    force: Annotated[
        bool, typer.Option(help="Replace a benchmark (or any folder) already at --out.")
    ] = False,
    from_: Annotated[
        str | None, typer.Option("--from", help="sim: the built benchmark to draw from.")
    ] = None,
    users: Annotated[int | None, typer.Option(help="sim: simulated users.")] = None,
    groups: Annotated[int | None, typer.Option(help="sim: K groups of users.")] = None,
    noise: Annotated[float | None, typer.Option(help="sim: label temperature BETA.")] = None,
    attributes: Annotated[
        str | None, typer.Option(help="sim: comma-separated attributes (default: all).")
    ] = None,
    user_spread: Annotated[float | None, typer.Option(help="sim: sigma around a group.")] = None,
    items_per_user: Annotated[int | None, typer.Option(help="sim: preferences per user.")] = None,
) -> None:
    """Build a benchmark folder: manifest.json, train/support/query/completions.jsonl.

    The build goes to a temporary folder renamed into place when complete."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; expected a folder for the benchmark")
    if out.is_dir() and any(out.iterdir()) and not force:
        what = "holds a benchmark" if (out / "manifest.json").exists() else "is not empty"
        raise ConfigError(f"--out {out}: {what}; --force replaces it whole")
    check_writable(out)
    builder = BUILDERS.get(name)
    own = {  # a builder's own options (``options_class``, e.g. sim's SimOptions), when given
        "users": users,
        "groups": groups,
        "noise": noise,
        "attributes": tuple(a.strip() for a in attributes.split(",")) if attributes else None,
        "user_spread": user_spread,
        "items_per_user": items_per_user,
    }
    own = {k: v for k, v in own.items() if v is not None}
    options_class = getattr(builder, "options_class", BuildOptions)
    unknown = sorted(set(own) - set(options_class.model_fields))
    if unknown or (from_ is not None and source is not None):
        flag = f"--{unknown[0].replace('_', '-')}" if unknown else "--from with --source"
        raise ConfigError(f"{flag}: not an option of the {name} builder")
    options = options_class(
        **own,
        source=from_ if from_ is not None else source,
        seed=seed,
        train_users=train_users,
        adapt_users=adapt_users,
        min_items=min_items,
        max_items=max_items,
        max_query=max_query,
        support_fraction=support_fraction,
        split=split,
        split_file=split_file,
        completions=completions,
        negatives_top_k=negatives_top_k,
        embedder=embedder,
        negative_pool=negative_pool,
        embed_max_tokens=embed_max_tokens,
        include=tuple(include or ()),
        batch_size=batch_size,
    )
    with folder_in_place(out) as tmp:  # whole or not at all: Ctrl-C leaves the old folder
        manifest = builder(options, tmp)
    counts = manifest["counts"]
    stdout.print(
        f"wrote {out}: {counts['train_users']} train users ({counts['train_preferences']} prefs), "
        f"{counts['adapt_users']} adaptation users ({counts['support_preferences']} support, "
        f"{counts['query_preferences']} query), {counts['completions']} completions"
    )


def data_stats(
    path: Annotated[Path, typer.Argument(help="A benchmark folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    verify: VerifyOption = True,
) -> None:
    """Users, preferences per user (min/median/mean/max), prompts and completions."""
    stats = benchmark_stats(load_benchmark(path, verify=verify))
    if as_json:
        stdout.print_json(json.dumps(stats))
        return
    show_stats(stats)


def data_verify(path: Annotated[Path, typer.Argument(help="A benchmark folder.")]) -> None:
    """Check every file against the sha256 its manifest records; name each one that differs."""
    differences = benchmark_differences(path)
    for file, problem in differences:
        stdout.print(f"{file}: {problem}", markup=False, soft_wrap=True)
    if differences:
        raise DataError(f"{len(differences)} file(s) differ from the manifest", path)
    stdout.print(f"{path}: every file matches its manifest", markup=False, soft_wrap=True)


def show_stats(stats: dict[str, Any]) -> None:
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
    paper = stats.get("paper_preferences_per_user")
    if paper:
        stdout.print(
            f"paper ({paper['benchmark']}, section 6): {paper['train']:g} prefs per train user, "
            f"{paper['adapt']:g} per adaptation user (this build: mean column above)"
        )
    stdout.print(f"prompts: {stats['prompts']}   completions: {stats['completions']}")
    for reason, count in stats["skipped"].items():
        stdout.print(f"skipped {count}: {reason}")
