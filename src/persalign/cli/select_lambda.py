"""``persalign select-lambda``: choose ARGS's lambda on held-out preferences of the train users
(appendix F.2).

    persalign select-lambda --benchmark out/tldr --reward runs/lore \\
        --policy bundled:smollm2-135m-instruct --lams 0,0.5,1,2 \\
        --objective policy-accuracy --out runs/lore/lambda.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from persalign.cli.checks import VerifyOption, check_out_file
from persalign.cli.output import stdout
from persalign.data.benchmark_folder import load_benchmark
from persalign.decoding import Policy
from persalign.errors import ConfigError
from persalign.rewards import load
from persalign.runs.lambda_selection import (
    heldout_preferences,
    save_selection,
    select_lambda,
)

DEFAULT_POLICY = "bundled:smollm2-135m-instruct"


def parse_lams(text: str) -> list[float]:
    """'0,0.5,1,2' -> [0.0, 0.5, 1.0, 2.0]."""
    try:
        lams = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--lams must be comma-separated numbers, got {text!r}") from None
    if not lams:
        raise ConfigError("--lams is empty")
    return lams


def select_lambda_command(
    benchmark: Annotated[Path, typer.Option(help="The benchmark folder.")],
    reward: Annotated[Path, typer.Option(help="Reward model folder (trained on train users).")],
    out: Annotated[Path, typer.Option(help="Where to write the choice and the curve (JSON).")],
    policy: Annotated[str, typer.Option(help="Policy: hub id, folder or bundled:<name>.")] = (
        DEFAULT_POLICY
    ),
    lams: Annotated[str, typer.Option(help="Comma-separated lambda grid.")] = "0,0.5,1,2",
    objective: Annotated[
        str, typer.Option(help="policy-accuracy (TL;DR, PRISM) | harmonic (Pref-LaMP/ACL)")
    ] = "policy-accuracy",
    scorer: Annotated[
        str | None, typer.Option(help="RGD scorer (default: from the reward model).")
    ] = None,
    per_user: Annotated[int, typer.Option(help="Held-out preferences per train user.")] = 2,
    max_users: Annotated[int | None, typer.Option(help="Held-out train users (all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass / decoding batch.")] = 8,
    k: Annotated[int, typer.Option(help="ARGS candidates per step (harmonic).")] = 10,
    max_new_tokens: Annotated[int, typer.Option(help="Generation length cap (harmonic).")] = 32,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (harmonic).")] = None,
    verify: VerifyOption = True,
) -> None:
    """Choose ARGS's lambda on held-out preferences of the train users (appendix F.2)."""
    grid = parse_lams(lams)
    check_out_file(out, "a JSON file")
    bench = load_benchmark(benchmark, verify=verify)
    heldout = heldout_preferences(bench, per_user=per_user, max_users=max_users, seed=seed)
    decode = {"k": k, "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    if stop:
        decode["stop"] = tuple(s.encode().decode("unicode_escape") for s in stop)
    result = select_lambda(
        Policy.load(policy),
        load(reward),
        heldout,
        grid,
        objective=objective,
        scorer=scorer,
        decode_settings=decode,
        batch_size=batch_size,
    )
    result = {"benchmark": str(benchmark), "reward": str(reward), "policy": policy, **result}
    save_selection(result, out)
    table = Table(title=f"lambda selection ({objective})", title_justify="left")
    columns = ["policy_accuracy", "rouge1", "inverse_perplexity", "score"]
    table.add_column("lambda", justify="right")
    for column in columns:
        table.add_column(column, justify="right")
    for point in result["curve"]:
        table.add_row(f"{point['lam']:g}", *(_cell(point.get(c)) for c in columns))
    stdout.print(table)
    stdout.print(f"chosen lambda: {result['lam']:g} (written to {out})")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
