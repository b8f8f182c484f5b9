"""``persalign data ...``: build and inspect per-user preference benchmarks.

persalign data build pref-acl --source ../shared/data/acl_anthology --out out/pref-acl
persalign data build --plugin mypkg.mydata my-data --my-option 3 --out out/mine
persalign data build sim --from out/pref-acl --users 64 --groups 4 --noise 1 --out out/sim
persalign data stats out/pref-acl [--json] [--no-verify]
persalign data verify out/pref-acl          # every file that differs from the manifest; exit 2
persalign data ceilings out/sim [--json]    # what methods could reach with exact attributes
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import click
import typer
from pydantic.fields import FieldInfo
from rich.table import Table
from typer.core import TyperGroup

from persalign.cli.checks import VerifyOption, check_writable
from persalign.cli.output import stdout
from persalign.data import BUILDERS
from persalign.data.benchmark_folder import benchmark_differences, load_benchmark
from persalign.data.stats import benchmark_stats
from persalign.errors import ConfigError, DataError
from persalign.io import folder_in_place
from persalign.registry import load_plugins
from persalign.report.ceilings import sim_ceilings


class BuildGroup(TyperGroup):
    """``persalign data build``: one command per registered builder, made on demand from the
    fields of its options class (``BUILDERS.options_class``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return BUILDERS.names()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return builder_command(cmd_name)  # an unknown name: ConfigError with "did you mean"


def _load_plugins(ctx: click.Context, param: click.Parameter, value: list[str] | None) -> None:
    load_plugins(value or [])  # eager: before the builder's name is looked up (and --help)


build_app = typer.Typer(
    cls=BuildGroup,
    no_args_is_help=True,
    help="Build a benchmark folder: manifest.json, train/support/query/completions.jsonl. "
    "`persalign data build NAME --help` lists NAME's options.",
)


@build_app.callback()
def _build_group(
    plugins: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            help="Import a plugin module first (repeatable; before NAME).",
            is_eager=True,
            callback=_load_plugins,
        ),
    ] = None,
) -> None:
    """Build a benchmark folder: manifest.json, train/support/query/completions.jsonl."""


def builder_command(name: str) -> click.Command:
    """The ``persalign data build NAME`` command: --out, one --flag per field of the builder's
    options class (its description as help, its default as default), --force."""
    builder = BUILDERS.get(name)
    fields = BUILDERS.options_class(name).model_fields
    params = [
        _param("out", Path, help="Output folder for the benchmark."),
        *(_field_param(key, field) for key, field in fields.items()),
        _param("force", bool, False, help="Replace a benchmark (or any folder) already at --out."),
    ]

    def command(out: Path, force: bool, **options: Any) -> None:
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        build_benchmark(name, out, force, {k: v for k, v in given.items() if v is not None})

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    doc = (builder.__doc__ or "").strip().splitlines()
    command.__doc__ = (
        f"{doc[0] if doc else name}\n\n"
        "The build goes to a temporary folder renamed into place when complete."
    )
    app = typer.Typer(add_completion=False)
    app.command(name)(command)
    return typer.main.get_command(app)


def _param(
    name: str,
    kind: Any,
    default: Any = inspect.Parameter.empty,
    *,
    help: str | None,
    flags: Sequence[str] = (),
):
    """A keyword parameter Typer reads as ``--name`` (or the ``flags`` given)."""
    annotation = Annotated[kind, typer.Option(*flags, help=help)]
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def _field_param(name: str, field: FieldInfo) -> inspect.Parameter:
    """A build option's CLI parameter: --name-with-dashes, repeatable for a tuple or list (None
    when not given: the field's default), its choices checked by the options class."""
    kind = _cli_type(field.annotation)
    default = ... if field.is_required() else field.get_default(call_default_factory=True)
    if get_origin(kind) is list or (
        get_origin(kind) in (Union, UnionType) and list in map(get_origin, get_args(kind))
    ):
        default = None
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flags = extra.get("cli", ())  # e.g. sim's source: --from (and --source)
    return _param(name, kind, default, help=field.description, flags=flags)


def _cli_type(annotation: Any) -> Any:
    """The type Typer parses a field as: the field's own scalar (``X | None`` kept), a
    ``Literal`` as ``str`` (the options class names the choices on a bad value), a tuple or list
    as a repeatable ``list[X] | None``; anything else as ``str``, parsed by the options class."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = _cli_type(rest[0]) if len(rest) == 1 else str
        return inner if get_origin(inner) is list else inner | None
    if origin is Literal:
        return str
    if origin in (tuple, list):
        return list[_cli_type(args[0]) if args else str] | None
    return annotation if annotation in (str, int, float, bool, Path) else str


def build_benchmark(name: str, out: Path, force: bool, options: dict[str, Any]) -> None:
    """Check ``out``, build benchmark ``name`` into it whole, and print its counts."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; expected a folder for the benchmark")
    if out.is_dir() and any(out.iterdir()) and not force:
        what = "holds a benchmark" if (out / "manifest.json").exists() else "is not empty"
        raise ConfigError(f"--out {out}: {what}; --force replaces it whole")
    check_writable(out)
    build = BUILDERS.get(name)
    built_options = BUILDERS.options_class(name)(**options)
    with folder_in_place(out) as tmp:  # whole or not at all: Ctrl-C leaves the old folder
        manifest = build(built_options, tmp)
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


def data_ceilings(
    path: Annotated[
        Path, typer.Argument(help="A sim benchmark folder (persalign data build sim).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    verify: VerifyOption = True,
) -> None:
    """Sim benchmarks: the true RM accuracy a global, group or per-user reward could reach with
    every text's exact attributes; run it before a study to see whether its methods can differ."""
    ceilings = sim_ceilings(load_benchmark(path, verify=verify))
    if as_json:
        stdout.print_json(json.dumps(ceilings))
        return
    table = Table(
        title=f"ceilings of {ceilings['benchmark']}: true RM accuracy with exact attributes",
        title_justify="left",
    )
    table.add_column("reward")
    table.add_column("accuracy", justify="right")
    table.add_column("95% CI")
    table.add_column("what it is")
    for name, row in ceilings["rows"].items():
        ci = row["ci95"]
        table.add_row(
            name,
            "n/a" if row["mean"] is None else f"{100 * row['mean']:.1f}%",
            "" if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]",
            row["what"],
        )
    stdout.print(table)
    stdout.print(
        f"{ceilings['users']} adaptation users, {ceilings['query_pairs']} query pairs "
        f"({ceilings['true_ties']} tied by r_u, left out), "
        f"{ceilings['support_pairs_per_user']:g} support pairs per user, "
        f"{ceilings['train_pairs']} train pairs; {ceilings['groups']} groups, "
        f"noise {ceilings['noise']:g}, spread {ceilings['user_spread']:g}"
    )


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
