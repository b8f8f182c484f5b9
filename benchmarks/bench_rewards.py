"""RM accuracy, training throughput and peak memory of every reward method on the shared TL;DR.

    python benchmarks/bench_rewards.py [--methods global-rm,lore] [--max-steps 30] [--batch-size 4]
    python benchmarks/bench_rewards.py --methods p-dpo --set adapt_steps=10   # any config field

PAL's seen workers are the train users and its unseen workers the adaptation users (the shared
batches hold 7 and 20 of them). Each method trains in its own subprocess (so peak memory is its
own) with the bundled SmolLM2-135M-Instruct backbone, one seed, then adapts every adaptation user
on its support set and reports RM accuracy (Eq. 2) on the query set. On 2 CPU cores the defaults
cut prompts to 128 tokens, responses to 48, and cap support and query sets; pass larger values on
a GPU machine. ``--set key=value`` (repeatable) overrides any field of every method's config
(e.g. P-DPO's ``adapt_steps_per_pass``: 1 runs the backbone at each of its 100 adaptation
steps, ~11 min per user on 2 cores with 4 support pairs); the overrides are recorded in the
output. Prints one JSON object.

    python benchmarks/bench_rewards.py --methods p-dpo --pdpo-before --max-users 4

adapts the same users twice from the same trained model: first the old way (two sequences per
support pair, a backbone pass at every one of the ``adapt_steps``: ``*_before`` keys), then with
the method's settings, and reports adaptation seconds per user, mean steps and backbone passes
and RM accuracy of both, the speedup, and how close the two land: the relative difference of
the adapted user vectors, the fraction of query pairs both order the same way, and the largest
change of a query pair's reward margin (next to the mean margin).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# P-DPO's adaptation before issue 13: two sequences per support pair, a backbone pass at each of
# all adapt_steps
PDPO_BEFORE = {"adapt_shared_prompt": False, "adapt_patience": None, "adapt_steps_per_pass": 1}


def scored(rm, query) -> tuple[dict, list[float] | None]:
    """RM accuracy (Eq. 2) of ``query`` and, where ``rm_accuracy`` makes two reward calls (no
    shared-row scoring, e.g. P-DPO), the same calls' margins r(chosen) - r(rejected)."""
    from persalign.metrics.ranking import (
        pairwise_hits,
        per_user_accuracy,
        rm_accuracy,
        two_call_rewards,
    )
    from persalign.rewards.engine.pair_eval import eval_mode

    if eval_mode(rm) is not None:
        return rm_accuracy(rm, query), None
    chosen, rejected = two_call_rewards(rm, query)  # rm_accuracy's own calls
    return per_user_accuracy(query, pairwise_hits(chosen, rejected)), (chosen - rejected).tolist()


def agreement(rm, users, before_vectors, before_margins, after_margins) -> dict:
    """How close the fast adaptation lands to the old one: user vectors and query margins (3
    significant digits: the differences are small)."""
    after = rm.user_vectors([u.user for u in users]).float()
    pairs = list(zip(before_margins, after_margins, strict=True))
    same = [(a > 0) == (b > 0) for a, b in pairs]
    return {
        "user_vector_rel_diff": float(
            f"{(after - before_vectors).norm() / before_vectors.norm():.3g}"
        ),
        "query_order_agreement": round(sum(same) / max(1, len(same)), 4),
        "query_margin_max_abs_diff": float(f"{max((abs(a - b) for a, b in pairs), default=0):.3g}"),
        "query_margin_mean_abs_before": float(
            f"{sum(abs(b) for b in before_margins) / max(1, len(pairs)):.3g}"
        ),
    }


def adapt_and_score(rm, users, query, args, suffix: str, **settings) -> tuple[dict, list | None]:
    """Adapt ``users`` (config fields ``settings`` changed for this call), then RM accuracy on
    their query pairs: seconds per user, mean adaptation steps, accuracy (keys + ``suffix``),
    and the query margins where ``scored`` has them."""
    config = rm.config
    rm.config = config.model_copy(update=settings)
    start = time.perf_counter()
    for user in users:
        rm.adapt(user.user, list(user.support)[: args.max_support])
    adapt_seconds = time.perf_counter() - start
    rm.config = config
    start = time.perf_counter()
    accuracy, margins = scored(rm, query)
    pdpo = rm.name == "p-dpo"
    steps = [len(rm.adapt_losses.get(u.user, [])) for u in users] if pdpo else []
    out = {
        "rm_accuracy": round(accuracy["mean"], 4),
        "rm_accuracy_pooled": round(accuracy["pooled"], 4),
        "query_pairs": accuracy["pairs"],
        "adapt_users": len(users),
        "adapt_seconds": round(adapt_seconds, 1),
        "adapt_seconds_per_user": round(adapt_seconds / max(1, len(users)), 2),
        "eval_seconds": round(time.perf_counter() - start, 1),
    }
    if steps:
        out["adapt_steps_mean"] = round(sum(steps) / len(steps), 1)
        passes = [rm.adapt_passes.get(u.user, 0) for u in users]
        out["adapt_backbone_passes_mean"] = round(sum(passes) / len(passes), 1)
        losses = rm.adapt_losses.get(users[0].user, [])
        out["adapt_losses_first_user"] = [round(x, 5) for x in losses]
    return {key + suffix: value for key, value in out.items()}, margins


def child(args: argparse.Namespace) -> None:
    """Train, adapt and evaluate one method in this process; print its JSON line."""
    import torch

    from persalign.data import load_benchmark
    from persalign.logs import setup_logging
    from persalign.overrides import parse_overrides
    from persalign.rewards import create
    from persalign.sysinfo import peak_rss_mib

    setup_logging(0)
    torch.manual_seed(args.seed)
    bench = load_benchmark(args.benchmark)
    rm = create(
        args.method,
        backbone=args.backbone,
        seed=args.seed,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        max_prompt_tokens=args.max_prompt_tokens,
        max_response_tokens=args.max_response_tokens,
        **parse_overrides(args.set),
    )
    start = time.perf_counter()
    history = rm.fit(bench.train, progress=False)
    train_seconds = time.perf_counter() - start
    users = bench.adapt_users()[: args.max_users] if args.max_users else bench.adapt_users()
    before = {}
    query = [q for user in users for q in list(user.query)[: args.max_query]]
    if args.method == "p-dpo" and args.pdpo_before:
        before, before_margins = adapt_and_score(rm, users, query, args, "_before", **PDPO_BEFORE)
        before_vectors = rm.user_vectors([u.user for u in users]).float().clone()
    adapted, margins = adapt_and_score(rm, users, query, args, "")
    if before:
        adapted["adapt_speedup"] = round(
            before["adapt_seconds_per_user_before"] / adapted["adapt_seconds_per_user"], 2
        )
        if margins is not None and before_margins is not None:
            adapted |= agreement(rm, users, before_vectors, before_margins, margins)
    pairs = sum(r["pairs"] for r in history)
    print(
        json.dumps(
            {
                "method": args.method,
                **adapted,
                **before,
                "train_steps": len(history),
                "train_pairs_per_second": round(pairs / train_seconds, 3),
                "final_train_loss": round(history[-1]["loss"], 4),
                "train_seconds": round(train_seconds, 1),
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = os.environ.get("PERSALIGN_SHARED_DATA", str(Path(__file__).parents[2] / "shared/data"))
    parser.add_argument("--methods", default="")
    parser.add_argument("--backbone", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-prompt-tokens", type=int, default=128)
    parser.add_argument("--max-response-tokens", type=int, default=48)
    parser.add_argument("--max-support", type=int, default=16)
    parser.add_argument("--max-query", type=int, default=16)
    parser.add_argument("--max-users", type=int, default=0, help="adaptation users; 0: all")
    parser.add_argument(
        "--pdpo-before",
        action="store_true",
        help="P-DPO: also adapt with the old path (two sequences, no early stopping), report "
        "its seconds per user and RM accuracy as *_before",
    )
    parser.add_argument("--tldr", default=str(Path(shared) / "tldr"))
    parser.add_argument(
        "--set", action="append", default=[], help="key=value for every method's config"
    )
    parser.add_argument("--benchmark")
    parser.add_argument("--method")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from persalign.data import BUILDERS, BuildOptions
    from persalign.rewards import METHODS

    methods = [m for m in args.methods.split(",") if m] or METHODS.names()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        bench = Path(tmp) / "tldr"
        BUILDERS.get("tldr")(
            BuildOptions(source=args.tldr, split_file=str(Path(args.tldr) / "pal_worker_ids.json")),
            bench,
        )
        for method in methods:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--method",
                method,
                "--benchmark",
                str(bench),
            ]
            for flag in (
                "backbone",
                "seed",
                "max_steps",
                "batch_size",
                "max_prompt_tokens",
                "max_response_tokens",
                "max_support",
                "max_query",
                "max_users",
            ):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            if args.pdpo_before:
                cmd.append("--pdpo-before")
            for item in args.set:
                cmd += ["--set", item]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                results.append(
                    {
                        "method": method,
                        "returncode": proc.returncode,  # negative: killed by that signal
                        "error": proc.stderr.strip().splitlines()[-3:],
                    }
                )
                sys.stderr.write(json.dumps(results[-1]) + "\n")
                continue
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            sys.stderr.write(json.dumps(results[-1]) + "\n")
    print(
        json.dumps(
            {
                "benchmark": "reward_methods_tldr",
                "settings": {
                    k: getattr(args, k)
                    for k in (
                        "backbone",
                        "seed",
                        "max_steps",
                        "batch_size",
                        "max_prompt_tokens",
                        "max_response_tokens",
                        "max_support",
                        "max_query",
                        "max_users",
                        "pdpo_before",
                        "set",
                    )
                },
                "cpu_count": os.cpu_count(),
                "methods": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
