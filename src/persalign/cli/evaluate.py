"""``persalign evaluate rm|policy|generation|winrate``: the paper's metrics from the command line.

    persalign evaluate policy --benchmark out/tldr --policy bundled:smollm2-135m-instruct \\
        --scorer personal-rgd --reward runs/lore --lam 1.0 [--json] [--out acc.json]
    persalign evaluate policy --benchmark out/tldr --scorer icl --shots 4
    persalign evaluate rm --model runs/lore --benchmark out/tldr [--json]
    persalign evaluate generation --generations gen/args.jsonl --benchmark out/pref-acl
    persalign evaluate winrate --reward runs/lore --rgd gen/args.jsonl --zero-shot gen/zs.jsonl \\
        --benchmark out/pref-acl

``evaluate policy`` scores the adaptation users' query preferences (Eq. 3 with the scorers of
Eqs. 4-7; ICL demonstrations come from each user's support set, as ``persalign generate --decoder
icl`` picks them). ``rm`` is Eq. 2; ``generation`` is Eq. 8 against
the users' completions; ``winrate`` is Table 5. Generation files are checked line by line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from persalign.cli.checks import VerifyOption, check_out_file, check_writable
from persalign.cli.output import emit, print_accuracy, read_generations, stdout
from persalign.data.benchmark_folder import load_benchmark
from persalign.decoding import Policy
from persalign.errors import ConfigError
from persalign.io import write_json
from persalign.metrics.generation import SIMILARITIES, GenerationSettings, behavioural_alignment
from persalign.metrics.policy_accuracy import policy_accuracy
from persalign.metrics.ranking import rm_accuracy
from persalign.metrics.scoring import REWARD_MODEL_SCORERS, RGD_SCORERS, check_scorer
from persalign.metrics.winrate import DEFAULT_TIES, tie_weight, win_rate
from persalign.rewards import load

log = logging.getLogger(__name__)
DEFAULT_POLICY = "bundled:smollm2-135m-instruct"

GENERATION = GenerationSettings()  # the run metric's defaults: one source for both


def evaluate_policy(
    benchmark: Annotated[Path, typer.Option(help="The benchmark folder.")],
    scorer: Annotated[
        str,
        typer.Option(help="base | global-rgd | personal-rgd | icl | personalized-policy (P-DPO)"),
    ],
    policy: Annotated[str, typer.Option(help="Policy: hub id, folder or bundled:<name>.")] = (
        DEFAULT_POLICY
    ),
    reward: Annotated[Path | None, typer.Option(help="Reward model folder (RGD).")] = None,
    lam: Annotated[float, typer.Option(help="RGD lambda.")] = 1.0,
    shots: Annotated[int, typer.Option(help="ICL demonstrations.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the ICL draws.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Responses per forward pass.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    verify: VerifyOption = True,
    out: Annotated[Path | None, typer.Option(help="Also write the result to this file.")] = None,
) -> None:
    """Policy accuracy (Eq. 3) on the adaptation users' query preferences, per user and overall."""
    if out is not None:
        check_out_file(out, "a JSON file")
    check_scorer(scorer)
    if scorer in REWARD_MODEL_SCORERS and reward is None:
        raise ConfigError(f"the {scorer} scorer needs a reward model (--reward MODEL_DIR)")
    bench = load_benchmark(benchmark, verify=verify)
    if not bench.query:
        raise ConfigError(f"benchmark {benchmark} has no query preferences")
    rm = load(reward) if scorer in REWARD_MODEL_SCORERS else None
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
    print_accuracy(f"policy accuracy ({scorer}{setting.get(scorer, '')})", result)


def evaluate_rm(
    model: Annotated[Path, typer.Option(help="A trained reward-model folder.")],
    benchmark: Annotated[Path, typer.Option(help="The benchmark folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    verify: VerifyOption = True,
) -> None:
    """RM accuracy (Eq. 2) on the adaptation users' query preferences, per user and overall."""
    check_writable(model / "rm_accuracy.json", "--model")  # written there at the end
    bench = load_benchmark(benchmark, verify=verify)
    rm = load(model)
    result = {"metric": "rm_accuracy", "model": str(model), **rm_accuracy(rm, bench.query)}
    write_json(model / "rm_accuracy.json", result)
    if as_json:
        stdout.print_json(json.dumps(result))
        return
    print_accuracy(f"RM accuracy of {model}", result)


def evaluate_generation(
    generations: Annotated[Path, typer.Option(help="Generations (persalign generate output).")],
    benchmark: Annotated[Path, typer.Option(help="The benchmark folder (with completions).")],
    bertscore_model: Annotated[
        str,
        typer.Option(help="BERTScore model: bundled:<name> (offline), folder or hub id."),
    ] = GENERATION.bertscore_model,
    num_layers: Annotated[
        int | None, typer.Option(help="BERTScore layer (default: bert-score's, else the last).")
    ] = None,
    bertscore_rescale: Annotated[
        str,
        typer.Option(
            help="auto: rescale with bert-score's baseline where it ships one (roberta-large), "
            "else raw; always: rescale or fail; never: raw F1."
        ),
    ] = GENERATION.bertscore_rescale,
    batch_size: Annotated[
        int, typer.Option(help="BERTScore batch size.")
    ] = GENERATION.bertscore_batch_size,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    verify: VerifyOption = True,
    out: Annotated[
        Path | None, typer.Option(help="Also write the result to this JSON file.")
    ] = None,
) -> None:
    """Behavioural alignment (Eq. 8): ROUGE-1/L and BERTScore-F1 against the users' completions."""
    if out is not None:
        check_out_file(out, "a JSON file")
    gens = read_generations(generations)
    bench = load_benchmark(benchmark, verify=verify)
    if not bench.completions:
        raise ConfigError(
            f"benchmark {benchmark} has no completions: behavioural alignment needs the users' "
            "own responses (Pref-LaMP / Pref-ACL style benchmarks)"
        )
    result = behavioural_alignment(
        gens,
        bench.completions,
        bertscore_model,
        num_layers=num_layers,
        batch_size=batch_size,
        rescale=bertscore_rescale,
    )
    result = {
        "metric": "behavioural_alignment",
        "generations": str(generations),
        "benchmark": str(benchmark),
        **result,
    }
    if emit(result, as_json, out):
        return
    table = Table(title=f"Behavioural alignment of {generations}", title_justify="left")
    table.add_column("similarity")
    table.add_column("mean over users", justify="right")
    table.add_column("pooled", justify="right")
    for name in SIMILARITIES:
        table.add_row(name, f"{result[name]['mean']:.4f}", f"{result[name]['pooled']:.4f}")
    stdout.print(table)
    baseline = result["bertscore_baseline"]
    scale = "raw" if baseline is None else f"rescaled with baseline {baseline:.4f}"
    stdout.print(
        f"{result['n']} generations of {result['users']} users scored; BERTScore: "
        f"{result['bertscore_model']} (layer {result['bertscore_layers']}, {scale}); "
        f"{result['missing']} without a reference, {result['empty']} empty, "
        f"{result['unmatched_references']} references without a generation"
    )


def evaluate_winrate(
    reward: Annotated[Path, typer.Option(help="The method's trained reward-model folder.")],
    rgd: Annotated[Path, typer.Option(help="Its reward-guided generations (JSON lines).")],
    zero_shot: Annotated[Path, typer.Option(help="Zero-shot generations (JSON lines).")],
    benchmark: Annotated[Path, typer.Option(help="The benchmark folder (query prompts).")],
    ties: Annotated[
        str,
        typer.Option(help="What a tie counts as: loss (no win, the paper's) or half (a half win)."),
    ] = DEFAULT_TIES,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    verify: VerifyOption = True,
    out: Annotated[
        Path | None, typer.Option(help="Also write the result to this JSON file.")
    ] = None,
) -> None:
    """Win rate (Table 5): how often the RM scores its RGD output above zero-shot's."""
    if out is not None:
        check_out_file(out, "a JSON file")
    tie_weight(ties)  # a bad value is an error before any model loads
    rgd_gens, zero_gens = read_generations(rgd), read_generations(zero_shot)
    bench = load_benchmark(benchmark, verify=verify)
    prompts = {(q.user, q.id): q.prompt for q in bench.query}
    rm = load(reward)
    result = {
        "metric": "win_rate",
        "reward": str(reward),
        "rgd": str(rgd),
        "zero_shot": str(zero_shot),
        **win_rate(rm, rgd_gens, zero_gens, prompts, ties),
    }
    if emit(result, as_json, out):
        return
    table = Table(title=f"Win rate of {rgd} over {zero_shot}", title_justify="left")
    table.add_column("user")
    table.add_column("win rate", justify="right")
    table.add_column("tie rate", justify="right")
    for user, value in result["per_user"].items():
        table.add_row(user, f"{value:.3f}", f"{result['tie_rate'][user]:.3f}")
    stdout.print(table)
    stdout.print(
        f"win rate over {result['n']} pairs: {result['rate']:.4f} ({result['tie_rule']}: a tie "
        f"counts as {result['tie_weight']:g}; {result['wins']} wins, {result['ties']} ties, "
        f"{result['losses']} losses); mean over {result['users']} users: "
        f"{result['per_user_mean']:.4f}; not scored: {result['unpaired_rgd']} RGD and "
        f"{result['unpaired_zero_shot']} zero-shot outputs without a partner, "
        f"{result['no_prompt']} without a prompt, {result['empty']} with an empty text"
    )
