"""The ``persalign`` command line: every command is attached here, in one place.

    persalign ls [datasets|methods|decoders|metrics]        cli/ls.py
    persalign data build|stats|verify ...                    cli/data.py
    persalign train ...                                      cli/train.py
    persalign evaluate rm|policy|generation|winrate ...      cli/evaluate.py
    persalign generate ...                                   cli/generate.py
    persalign select-lambda ...                              cli/select_lambda.py
    persalign select RUN_DIR [--metric NAME]                 cli/select.py
    persalign run CONFIG [--set a.b=v] / persalign demo      cli/run.py
    persalign report RUN_DIR                                 cli/report.py
    persalign serve --policy SPEC --reward DIR ...           cli/serve.py

One module per command group holds plain functions; nothing registers a command by being
imported. Errors the user can fix (bad files, unknown names, bad options) print one line and
exit 2; Ctrl-C prints ``interrupted`` and exits 130. No module outside ``cli/`` imports typer.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from persalign.cli import (
    data,
    evaluate,
    generate,
    ls,
    report,
    run,
    select,
    select_lambda,
    serve,
    train,
)
from persalign.errors import PersalignError
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
evaluate_app = typer.Typer(help="Evaluate reward models and policies.", no_args_is_help=True)


@app.callback()
def _global(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logs.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
) -> None:
    setup_logging(0 if quiet else 1 + verbose)


app.command("ls")(ls.list_registered)
app.add_typer(data_app, name="data")
data_app.add_typer(data.build_app, name="build")
data_app.command("stats")(data.data_stats)
data_app.command("verify")(data.data_verify)
app.command("train")(train.train)
app.add_typer(evaluate_app, name="evaluate")
evaluate_app.command("rm")(evaluate.evaluate_rm)
evaluate_app.command("policy")(evaluate.evaluate_policy)
evaluate_app.command("generation")(evaluate.evaluate_generation)
evaluate_app.command("winrate")(evaluate.evaluate_winrate)
app.command("generate")(generate.generate)
app.command("select-lambda")(select_lambda.select_lambda_command)
app.command("select")(select.select)
app.command("run")(run.run)
app.command("demo")(run.demo)
app.command("report")(report.report)
app.command("serve")(serve.serve)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app, turning user errors into one line and exit code 2."""
    try:
        app(args=argv, prog_name="persalign")
    except PersalignError as exc:
        stderr.print(f"error: {exc}", markup=False, soft_wrap=True)  # one line, never wrapped
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # outside a command (Typer turns one inside into exit 130)
        stderr.print("interrupted", markup=False)
        raise SystemExit(130) from None
    except SystemExit as exc:
        if exc.code == 130:  # Ctrl-C inside a command: Typer exits 130 without a word
            stderr.print("interrupted", markup=False)
        raise


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
