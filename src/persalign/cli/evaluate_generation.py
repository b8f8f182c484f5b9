"""``persalign evaluate generation`` (Eq. 8) and ``persalign evaluate winrate`` (Table 5).

    persalign evaluate generation --generations runs/lore/args.jsonl --benchmark out/pref-acl \\
        [--bertscore-model bundled:all-minilm-l6-v2 | roberta-large] [--json] [--out FILE]
    persalign evaluate winrate --reward runs/lore --rgd runs/lore/args.jsonl \\
        --zero-shot runs/zero-shot.jsonl --benchmark out/pref-acl [--json] [--out FILE]

Both read ``persalign generate`` output (JSON lines with user, id, text); a malformed line, a
missing field or a duplicated (user, id) is an error naming the file and line. The commands are
registered on ``evaluate_app`` (see :mod:`persalign.cli.train`) when this module is
imported, which :mod:`persalign.cli` does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from persalign.cli.train import evaluate_app
from persalign.metrics.bertscore import DEFAULT_BERTSCORE_MODEL

log = logging.getLogger(__name__)
stdout = Console(highlight=False)


def read_generations(path: Path) -> list[dict[str, Any]]:
    """The records of a ``persalign generate`` file; DataError (file:line) on any bad line."""
    from persalign.errors import DataError
    from persalign.io import read_jsonl

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


def _emit(result: dict[str, Any], as_json: bool, out: Path | None) -> bool:
    """Write ``result`` to ``out`` if given, print it as JSON if asked; True when printed."""
    from persalign.io import write_json

    if out is not None:
        write_json(out, result)
        log.info("wrote %s", out)
    if as_json:
        stdout.print_json(json.dumps(result, allow_nan=True))
    return as_json


@evaluate_app.command("generation")
def evaluate_generation(
    generations: Annotated[Path, typer.Option(help="Generations (persalign generate output).")],
    benchmark: Annotated[Path, typer.Option(help="The benchmark folder (with completions).")],
    bertscore_model: Annotated[
        str,
        typer.Option(help="BERTScore model: bundled:<name> (offline), folder or hub id."),
    ] = DEFAULT_BERTSCORE_MODEL,
    num_layers: Annotated[
        int | None, typer.Option(help="BERTScore layer (default: bert-score's, else the last).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="BERTScore batch size.")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Also write the result to this JSON file.")
    ] = None,
) -> None:
    """Behavioural alignment (Eq. 8): ROUGE-1/L and BERTScore-F1 against the users' completions."""
    from persalign.data.benchmark_folder import load_benchmark
    from persalign.errors import ConfigError
    from persalign.metrics.generation import SIMILARITIES, behavioural_alignment

    gens = read_generations(generations)
    bench = load_benchmark(benchmark)
    if not bench.completions:
        raise ConfigError(
            f"benchmark {benchmark} has no completions: behavioural alignment needs the users' "
            "own responses (Pref-LaMP / Pref-ACL style benchmarks)"
        )
    result = behavioural_alignment(
        gens, bench.completions, bertscore_model, num_layers=num_layers, batch_size=batch_size
    )
    result = {
        "metric": "behavioural_alignment",
        "generations": str(generations),
        "benchmark": str(benchmark),
        **result,
    }
    if _emit(result, as_json, out):
        return
    table = Table(title=f"Behavioural alignment of {generations}", title_justify="left")
    table.add_column("similarity")
    table.add_column("mean over users", justify="right")
    table.add_column("pooled", justify="right")
    for name in SIMILARITIES:
        table.add_row(name, f"{result[name]['mean']:.4f}", f"{result[name]['pooled']:.4f}")
    stdout.print(table)
    stdout.print(
        f"{result['n']} generations of {result['users']} users scored; BERTScore: "
        f"{result['bertscore_model']} (layer {result['bertscore_layers']}); "
        f"{result['missing']} without a reference, {result['empty']} empty, "
        f"{result['unmatched_references']} references without a generation"
    )


@evaluate_app.command("winrate")
def evaluate_winrate(
    reward: Annotated[Path, typer.Option(help="The method's trained reward-model folder.")],
    rgd: Annotated[Path, typer.Option(help="Its reward-guided generations (JSON lines).")],
    zero_shot: Annotated[Path, typer.Option(help="Zero-shot generations (JSON lines).")],
    benchmark: Annotated[Path, typer.Option(help="The benchmark folder (query prompts).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Also write the result to this JSON file.")
    ] = None,
) -> None:
    """Win rate (Table 5): how often the RM scores its RGD output above zero-shot's."""
    from persalign.data.benchmark_folder import load_benchmark
    from persalign.metrics.winrate import win_rate
    from persalign.rewards import load

    rgd_gens, zero_gens = read_generations(rgd), read_generations(zero_shot)
    bench = load_benchmark(benchmark)
    prompts = {(q.user, q.id): q.prompt for q in bench.query}
    rm = load(reward)
    result = {
        "metric": "win_rate",
        "reward": str(reward),
        "rgd": str(rgd),
        "zero_shot": str(zero_shot),
        **win_rate(rm, rgd_gens, zero_gens, prompts),
    }
    if _emit(result, as_json, out):
        return
    table = Table(title=f"Win rate of {rgd} over {zero_shot}", title_justify="left")
    table.add_column("user")
    table.add_column("win rate", justify="right")
    table.add_column("tie rate", justify="right")
    for user, value in result["per_user"].items():
        table.add_row(user, f"{value:.3f}", f"{result['tie_rate'][user]:.3f}")
    stdout.print(table)
    stdout.print(
        f"mean over {result['users']} users: {result['mean']:.4f} (pooled over {result['n']} "
        f"pairs: {result['pooled']:.4f}; {result['wins']} wins, {result['ties']} ties, "
        f"{result['losses']} losses); not scored: {result['unpaired_rgd']} RGD and "
        f"{result['unpaired_zero_shot']} zero-shot outputs without a partner, "
        f"{result['no_prompt']} without a prompt, {result['empty']} with an empty text"
    )
