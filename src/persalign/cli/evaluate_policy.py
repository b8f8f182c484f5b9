"""``persalign evaluate policy`` and ``persalign select-lambda``.

    persalign evaluate policy --benchmark out/tldr --policy bundled:smollm2-135m-instruct \\
        --scorer personal-rgd --reward runs/lore --lam 1.0 [--json] [--out acc.json]
    persalign evaluate policy --benchmark out/tldr --scorer icl --shots 4
    persalign select-lambda --benchmark out/tldr --reward runs/lore \\
        --policy bundled:smollm2-135m-instruct --lams 0,0.5,1,2 \\
        --objective policy-accuracy --out runs/lore/lambda.json

``evaluate policy`` scores the adaptation users' query preferences (Eq. 3 with the scorers of
Eqs. 4-7; ICL demonstrations come from each user's support set, as ``persalign generate --decoder
icl`` picks them). ``select-lambda`` picks ARGS's lambda on held-out preferences of the train
users (appendix F.2).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

log = logging.getLogger(__name__)
stdout = Console(highlight=False)
DEFAULT_POLICY = "bundled:smollm2-135m-instruct"


def evaluate_policy(
    benchmark: Annotated[Path, typer.Option(help="The benchmark folder.")],
    scorer: Annotated[str, typer.Option(help="base | global-rgd | personal-rgd | icl")],
    policy: Annotated[str, typer.Option(help="Policy: hub id, folder or bundled:<name>.")] = (
        DEFAULT_POLICY
    ),
    reward: Annotated[Path | None, typer.Option(help="Reward model folder (RGD).")] = None,
    lam: Annotated[float, typer.Option(help="RGD lambda.")] = 1.0,
    shots: Annotated[int, typer.Option(help="ICL demonstrations.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the ICL draws.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Responses per forward pass.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the result to this file.")] = None,
) -> None:
    """Policy accuracy (Eq. 3) on the adaptation users' query preferences, per user and overall."""
    from persalign.data.benchmark_folder import load_benchmark
    from persalign.decoding import Policy
    from persalign.errors import ConfigError
    from persalign.io import write_json
    from persalign.metrics.policy_accuracy import RGD_SCORERS, check_scorer, policy_accuracy
    from persalign.rewards import load

    check_scorer(scorer)
    if scorer in RGD_SCORERS and reward is None:
        raise ConfigError(f"the {scorer} scorer needs a reward model (--reward MODEL_DIR)")
    bench = load_benchmark(benchmark)
    if not bench.query:
        raise ConfigError(f"benchmark {benchmark} has no query preferences")
    rm = load(reward) if scorer in RGD_SCORERS else None
    result = policy_accuracy(
        Policy.load(policy),
        bench.query,
        scorer=scorer,
        reward_model=rm,
        lam=lam,
        support={u.user: list(u.support) for u in bench.adapt_users()},
        shots=shots,
        seed=seed,
        batch_size=batch_size,
    )
    result = {
        "metric": "policy_accuracy",
        "benchmark": str(benchmark),
        "policy": policy,
        "reward": str(reward) if rm is not None else None,
        "shots": shots if scorer == "icl" else None,
        **result,
    }
    if out is not None:
        write_json(out, result)
    if as_json:
        stdout.print_json(json.dumps(result))
        return
    setting = {"icl": f", {shots} shots", **dict.fromkeys(RGD_SCORERS, f", lambda {lam:g}")}
    from persalign.cli.train import print_accuracy

    print_accuracy(f"policy accuracy ({scorer}{setting.get(scorer, '')})", result)


def parse_lams(text: str) -> list[float]:
    """'0,0.5,1,2' -> [0.0, 0.5, 1.0, 2.0]."""
    from persalign.errors import ConfigError

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
) -> None:
    """Choose ARGS's lambda on held-out preferences of the train users (appendix F.2)."""
    from persalign.data.benchmark_folder import load_benchmark
    from persalign.decoding import Policy
    from persalign.metrics.lambda_selection import (
        heldout_preferences,
        save_selection,
        select_lambda,
    )
    from persalign.rewards import load

    grid = parse_lams(lams)
    bench = load_benchmark(benchmark)
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
