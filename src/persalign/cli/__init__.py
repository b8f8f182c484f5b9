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

import atexit
import contextlib
import os
import signal
import sys
import threading
from typing import Annotated, NoReturn

import typer

from persalign.cli import (  # _startup first: Ctrl-C while the rest is imported
    _startup,
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
from persalign.io import interrupt_point
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
data_app.command("ceilings")(data.data_ceilings)
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
    """Entry point: runs the app, turning user errors into one line and exit code 2.

    With ``argv`` (tests, embedding): returns or raises SystemExit. Without (the ``persalign``
    script, ``python -m persalign.cli``): this process's exit is handled here too, so that a
    Ctrl-C at any point from here on, including while Python's exit handlers run (torch has
    some), prints ``interrupted`` and exits 130; the process never returns from this call.
    """
    if argv is not None:
        _run(argv)
    else:
        _run_process()


def _run(argv: list[str] | None) -> None:
    try:
        app(args=argv, prog_name="persalign")
    except PersalignError as exc:
        stderr.print(f"error: {exc}", markup=False, soft_wrap=True)  # one line, never wrapped
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # outside a command (Typer turns one inside into exit 130)
        stderr.print("interrupted", markup=False)
        raise SystemExit(INTERRUPTED) from None
    except SystemExit as exc:
        if exc.code == INTERRUPTED:  # Ctrl-C inside a command: Typer exits 130 without a word
            stderr.print("interrupted", markup=False)
        raise


INTERRUPTED = _startup.INTERRUPTED
_exiting = False  # set once the command has ended: a Ctrl-C then exits at once


def _on_sigint(signum: int, frame: object) -> None:
    if not _exiting:
        raise KeyboardInterrupt  # as Python's own handler: the command unwinds
    _exit_interrupted()


def _exit_interrupted() -> NoReturn:
    os.write(2, b"interrupted\n")  # not through rich: the exit may be half done
    os._exit(INTERRUPTED)


def _run_process() -> NoReturn:
    global _exiting
    try:
        signal.signal(signal.SIGINT, _on_sigint)
        atexit.register(interrupt_point, "atexit")  # tests: Ctrl-C among the exit handlers
        try:
            _run(sys.argv[1:])
            code = 0
        finally:
            _exiting = True
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:  # one that escaped _run (while it printed) or beat `_exiting`
        _exit_interrupted()
    except BaseException:  # a bug: the usual traceback, exit 1
        sys.excepthook(*sys.exc_info())
        code = 1
    _exit(code)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    sys.stderr.write(f"{exc.code}\n")  # sys.exit("message"), as Python does it
    return 1


def _exit(code: int) -> NoReturn:
    """What the interpreter does at exit (wait for threads, exit handlers, flush), then exit
    with ``code`` unless SIGINT came meanwhile: the last step cannot be interrupted, so the
    code is 130 for any Ctrl-C before it (Python's own exit resets the handler to the default,
    which would kill the process without a word, or, inside an exit handler, print a traceback
    and exit 0)."""
    threading._shutdown()  # type: ignore[attr-defined]  # joins threads, as Py_Finalize does
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    if signal.SIGINT in signal.sigpending():
        _exit_interrupted()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
