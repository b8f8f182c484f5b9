"""``persalign generate``: outputs for the adaptation users' query prompts, resumable.

    persalign generate --benchmark out/pref-acl --decoder args \\
        --policy bundled:smollm2-135m-instruct --reward runs/lore --lam 1.0 --k 10 \\
        --out runs/lore/args.jsonl
    persalign generate --benchmark out/pref-acl --decoder icl-rag --shots 4 --out runs/icl.jsonl

One JSON line per output (user, prompt id, text, tokens, seconds). Rerunning skips the (user,
prompt id) pairs already written, so an interrupted run loses no finished work.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from persalign.cli.checks import VerifyOption, check_out_file
from persalign.cli.output import stdout
from persalign.data.benchmark_folder import load_benchmark
from persalign.decoding import DECODERS, GenerationRequest, Policy, create_decoder
from persalign.errors import ConfigError, validated
from persalign.io import dumps
from persalign.rewards import load

log = logging.getLogger(__name__)


def finished_keys(path: Path) -> set[tuple[str, str]]:
    """(user, id) pairs already in a generations file; a torn last line is ignored and cut."""
    if not path.is_file():
        return set()
    keys, good = set(), 0
    with path.open("rb") as handle:
        for raw in handle:
            try:
                obj = json.loads(raw)
                keys.add((obj["user"], obj["id"]))
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
                log.warning("%s: dropping a torn line at byte %d (rewritten below)", path, good)
                break
            good += len(raw)
    with path.open("r+b") as handle:  # cut a partially written last line, if any
        handle.truncate(good)
    return keys


def generate(
    benchmark: Annotated[Path, typer.Option(help="A benchmark folder.")],
    decoder: Annotated[str, typer.Option(help="args | zero-shot | icl | icl-rag | p-dpo | ...")],
    out: Annotated[Path, typer.Option(help="Output JSON-lines file (appended, resumable).")],
    policy: Annotated[
        str, typer.Option(help="Policy: hub id, folder or bundled:<name>.")
    ] = "bundled:smollm2-135m-instruct",
    reward: Annotated[Path | None, typer.Option(help="Reward model folder (args).")] = None,
    lam: Annotated[float, typer.Option(help="ARGS lambda (>= 0).")] = 1.0,
    allow_negative_lam: Annotated[
        bool, typer.Option(help="Accept --lam < 0: steer AWAY from the reward (an ablation).")
    ] = False,
    k: Annotated[int, typer.Option(help="ARGS candidates per step.")] = 10,
    shots: Annotated[int, typer.Option(help="ICL demonstrations.")] = 4,
    users: Annotated[str, typer.Option(help="all, or comma-separated user ids.")] = "all",
    max_new_tokens: Annotated[int, typer.Option(help="Generation length cap.")] = 64,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows decoded together.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed (sampling, ICL draws).")] = 0,
    verify: VerifyOption = True,
) -> None:
    """Generate for the adaptation users' query prompts with one decoder."""
    check_out_file(out, "a JSON-lines file")
    bench = load_benchmark(benchmark, verify=verify)
    adapt = {u.user: u for u in bench.adapt_users()}
    wanted = sorted(adapt) if users == "all" else [u.strip() for u in users.split(",")]
    unknown = [u for u in wanted if u not in adapt]
    if unknown:
        raise ConfigError(f"unknown adaptation user(s): {', '.join(unknown[:5])}")
    settings = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed}
    if stop:
        settings["stop"] = tuple(s.encode().decode("unicode_escape") for s in stop)
    decoder_class = DECODERS.get(decoder)
    offered = {"lam": lam, "allow_negative_lam": allow_negative_lam, "k": k, "shots": shots}
    # each decoder takes those it declares; checked here, before any model loads
    settings.update({key: value for key, value in offered.items() if decoder_class.takes(key)})
    validated(
        decoder_class.settings_class, settings, head=f"invalid settings for decoder {decoder}"
    )
    rm = load(reward) if reward is not None else None
    model = Policy.load(policy)
    dec = create_decoder(
        decoder,
        model,
        reward_model=rm,
        support={u: list(adapt[u].support) for u in wanted},
        **settings,
    )
    done = finished_keys(out)
    requests = [
        GenerationRequest(q.id, q.user, q.prompt)
        for u in wanted
        for q in adapt[u].query
        if (q.user, q.id) not in done
    ]
    log.info("%d outputs to write (%d already in %s)", len(requests), len(done), out)
    out.parent.mkdir(parents=True, exist_ok=True)
    chunk = max(1, batch_size)
    with out.open("a", encoding="utf-8") as handle:
        for start in range(0, len(requests), chunk):
            for gen in dec.generate(requests[start : start + chunk], progress=False):
                handle.write(dumps({**gen.to_json(), "decoder": decoder}) + "\n")
            handle.flush()
            log.info("generated %d / %d", min(start + chunk, len(requests)), len(requests))
    stdout.print(f"wrote {len(requests)} outputs to {out} ({len(done)} were already there)")
