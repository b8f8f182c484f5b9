"""``persalign train``: fit a reward model on the train users, adapt it to the others.

    persalign train --benchmark out/tldr --method lore --backbone bundled:smollm2-135m-instruct \\
        --out runs/lore [--seed 0] [--max-steps 200] [--set latent_dim=8 --set head_lr=0.5]

``train`` fits on the benchmark's train users, adapts every adaptation user from their support
set, and saves the model (with its adapted users), the training log (JSON lines) and a summary
(pairs per second, peak memory). Before training it estimates the peak memory and warns, naming
the option that lowers it, when the estimate exceeds the memory available.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from persalign.cli.checks import VerifyOption, check_writable
from persalign.cli.output import stdout
from persalign.data.benchmark_folder import load_benchmark
from persalign.errors import ConfigError
from persalign.io import SkipReport, folder_in_place, write_json
from persalign.logs import track
from persalign.overrides import parse_overrides
from persalign.rewards import create
from persalign.rewards.engine.memory import warn_if_short_of_memory
from persalign.rewards.engine.training import usable_pairs
from persalign.sysinfo import peak_rss_mib

log = logging.getLogger(__name__)


def train(
    benchmark: Annotated[Path, typer.Option(help="A benchmark folder (persalign data build).")],
    method: Annotated[str, typer.Option(help="Reward method (persalign ls methods).")],
    out: Annotated[Path, typer.Option(help="Output folder for the trained model.")],
    backbone: Annotated[
        str, typer.Option(help="Backbone: hub id, folder or bundled:<name>.")
    ] = "bundled:smollm2-135m-instruct",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    max_steps: Annotated[int | None, typer.Option(help="Stop training after N steps.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Config override key=value (repeatable).")
    ] = None,
    verify: VerifyOption = True,
) -> None:
    """Train a reward model on the train users and adapt it to every adaptation user."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; expected a folder for the trained model")
    check_writable(out)
    bench = load_benchmark(benchmark, verify=verify)
    skips = SkipReport()
    if not usable_pairs(bench.train, skips):  # before the backbone loads
        reasons = ", ".join(f"{n} skipped: {why}" for why, n in sorted(skips.counts.items()))
        raise ConfigError(
            f"{benchmark}: no usable training pairs in {len(bench.train)} train preferences"
            + (f" ({reasons})" if reasons else "")
        )
    config = {"backbone": backbone, "seed": seed, **parse_overrides(overrides or [])}
    if max_steps is not None:
        config["max_steps"] = max_steps
    rm = create(method, **config)
    rm.use_benchmark(bench)  # the oracle reads the simulated users' true reward
    warn_if_short_of_memory(rm)  # before training: name the option that lowers the peak
    # into a temporary folder renamed into place when whole: a kill leaves the old model
    with folder_in_place(out) as tmp:
        start = time.perf_counter()
        history = rm.fit(bench.train, log_path=tmp / "train_log.jsonl")
        train_seconds = time.perf_counter() - start
        adapt_users = bench.adapt_users()
        start = time.perf_counter()
        for user in track(adapt_users, f"adapting {len(adapt_users)} users"):
            rm.adapt(user.user, user.support)
        adapt_seconds = time.perf_counter() - start
        rm.save(tmp)
        pairs = sum(record["pairs"] for record in history)
        summary = {
            "method": method,
            "benchmark": str(benchmark),
            "steps": len(history),
            "train_seconds": round(train_seconds, 2),
            "pairs_per_second": round(pairs / train_seconds, 3) if train_seconds else None,
            "adapt_seconds": round(adapt_seconds, 2),
            "adapted_users": len(adapt_users),
            "final_loss": history[-1]["loss"] if history else None,
            "peak_rss_mib": peak_rss_mib(),
            "truncated": rm.formatter.report(),
        }
        write_json(tmp / "train_summary.json", summary)
    stdout.print(
        f"trained {method} for {summary['steps']} steps ({summary['pairs_per_second']} pairs/s), "
        f"adapted {len(adapt_users)} users; saved to {out}"
    )
