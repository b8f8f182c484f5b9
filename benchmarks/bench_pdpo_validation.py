"""Is P-DPO's first-order adaptation as good as the exact one, on what P-DPO reports?

    python benchmarks/bench_pdpo_validation.py                       # full: 100 training steps
    python benchmarks/bench_pdpo_validation.py --max-steps 2 --max-train 16 --max-users 2 \\
        --max-support 2 --max-query 2 --adapt-steps 4 --max-new-tokens 8   # smoke

Trains one P-DPO (bundled SmolLM2-135M-Instruct, TL;DR from the shared data, PAL's split) for
``--max-steps`` steps (default 100), then adapts every adaptation user three times from that same
model, timing each (docs/fidelity.md row 10 splits the old 18.1x figure this way):

- ``two_sequence_exact``: two sequences per support pair, a backbone pass at every step (the
  path before issue 13);
- ``shared_exact``: one shared-prompt row per pair, a backbone pass at every step
  (``adapt_steps_per_pass: 1``, what configs/paper pin);
- ``shared_first_order``: shared-prompt rows, ``--steps-per-pass`` (default 10) Adam steps per
  backbone pass on the first-order margins (the library default).

After each adaptation it measures, per user, what P-DPO reports: own-policy accuracy (the
``personalized-policy`` scorer: length-normalised log-likelihood of chosen above rejected, on the
user's query pairs) and ROUGE-1 of the policy's greedy generation against the chosen response.
The comparison is paired per user: first-order minus exact (shared), mean over users with a 95%
percentile bootstrap CI over users (1000 resamples, seed 0; report.verdicts.paired_difference),
in points (x 100). **Decision rule** (issue 22): if either difference's CI excludes 0, or its
point estimate exceeds 1 point in absolute value, the exact path becomes the default
(``decision``: "exact"); otherwise the first-order default stands ("first-order"), but only with
at least 10 users: below that the CI is not trusted (as in the report) and the decision is
"undecided". Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

PATHS = {
    "two_sequence_exact": {"adapt_shared_prompt": False, "adapt_steps_per_pass": 1},
    "shared_exact": {"adapt_shared_prompt": True, "adapt_steps_per_pass": 1},
    "shared_first_order": {"adapt_shared_prompt": True},  # + steps_per_pass from the options
}
THRESHOLD_POINTS = 1.0
MIN_USERS = 10


def adapt_all(rm, users, max_support: int, **settings) -> float:
    """Adapt every user with the config fields ``settings``; seconds per user."""
    config = rm.config
    rm.config = config.model_copy(update={"adapt_patience": None, **settings})
    start = time.perf_counter()
    for user in users:
        rm.adapt(user.user, list(user.support)[:max_support])
    seconds = time.perf_counter() - start
    rm.config = config
    return seconds / max(1, len(users))


def measure(rm, users, max_query: int, max_new_tokens: int) -> dict[str, dict[str, float]]:
    """Per user: own-policy accuracy and ROUGE-1 of the greedy generation (fractions)."""
    from persalign.metrics.generation import rouge

    out: dict[str, dict[str, float]] = {"policy_accuracy": {}, "rouge1": {}}
    for user in users:
        query = list(user.query)[:max_query]
        if not query:
            continue
        prompts = [q.prompt for q in query] * 2
        responses = [q.chosen for q in query] + [q.rejected for q in query]
        sums, lengths = rm.personalized_logprob_sums(prompts, responses, [user.user] * len(prompts))
        score = (sums / lengths.clamp(min=1)).tolist()  # [2n]: chosen, then rejected
        n = len(query)
        out["policy_accuracy"][user.user] = sum(score[i] > score[n + i] for i in range(n)) / n
        texts = rm.generate([q.prompt for q in query], [user.user] * n, max_new_tokens)
        scores = rouge(texts, [q.chosen for q in query])
        out["rouge1"][user.user] = sum(s["rouge1"] for s in scores) / n
    return out


def compare(exact: dict[str, float], fast: dict[str, float]) -> dict:
    """Paired first-order minus exact, per user, in points, with the decision rule's verdict."""
    from persalign.report.verdicts import paired_difference

    mean, ci, n = paired_difference(fast, exact, n_boot=1000)
    if mean is None:
        return {"users": 0, "difference_points": None, "ci_points": None, "moves": None}
    ci_points = None if ci is None else [round(100 * ci[0], 3), round(100 * ci[1], 3)]
    excludes = ci is not None and (ci[0] > 0 or ci[1] < 0)
    return {
        "users": n,
        "exact_mean": round(sum(exact.values()) / len(exact), 4),
        "first_order_mean": round(sum(fast.values()) / len(fast), 4),
        "difference_points": round(100 * mean, 3),
        "ci_points": ci_points,
        "moves": bool(excludes or abs(100 * mean) > THRESHOLD_POINTS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = os.environ.get("PERSALIGN_SHARED_DATA", str(Path(__file__).parents[2] / "shared/data"))
    parser.add_argument("--tldr", default=str(Path(shared) / "tldr"))
    parser.add_argument("--backbone", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=100, help="P-DPO training steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-prompt-tokens", type=int, default=128)
    parser.add_argument("--max-response-tokens", type=int, default=48)
    parser.add_argument(
        "--max-train", type=int, default=0, help="training preferences (seeded sample); 0: all"
    )
    parser.add_argument("--max-users", type=int, default=0, help="adaptation users; 0: all")
    parser.add_argument("--max-support", type=int, default=16)
    parser.add_argument("--max-query", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--adapt-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--steps-per-pass", type=int, default=10)
    parser.add_argument(
        "--skip-two-sequence", action="store_true", help="skip the slow two-sequence timing"
    )
    parser.add_argument(
        "--timing-users",
        type=int,
        default=0,
        help="time the two-sequence path (timing only) on the first N users; 0: all",
    )
    args = parser.parse_args()

    from persalign.data import BUILDERS, BuildOptions, load_benchmark
    from persalign.logs import setup_logging

    setup_logging(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tldr"
        split = str(Path(args.tldr) / "pal_worker_ids.json")
        BUILDERS.get("tldr")(BuildOptions(source=args.tldr, split_file=split), folder)
        print(json.dumps(run(args, load_benchmark(folder)), indent=2))


def run(args: argparse.Namespace, bench) -> dict:
    """Train, adapt three ways, measure and compare (the JSON ``main`` prints)."""
    import torch

    from persalign.rewards import create

    torch.manual_seed(args.seed)
    settings = {"adapt_steps": args.adapt_steps} if args.adapt_steps is not None else {}
    sizes = ("backbone", "seed", "max_steps", "batch_size", "max_prompt_tokens",
             "max_response_tokens")  # fmt: skip
    rm = create("p-dpo", **{k: getattr(args, k) for k in sizes}, **settings)
    start = time.perf_counter()
    train = list(bench.train)
    if args.max_train and len(train) > args.max_train:  # a seeded sample, in the data's order
        keep = set(random.Random(args.seed).sample(range(len(train)), args.max_train))
        train = [p for i, p in enumerate(train) if i in keep]
    history = rm.fit(train, progress=False)
    train_seconds = time.perf_counter() - start
    users = bench.adapt_users()[: args.max_users] if args.max_users else bench.adapt_users()
    paths = dict(PATHS)
    paths["shared_first_order"] = {**PATHS["shared_first_order"],
                                   "adapt_steps_per_pass": args.steps_per_pass}  # fmt: skip
    if args.skip_two_sequence:
        paths.pop("two_sequence_exact")
    seconds, measured = {}, {}
    for name, update in paths.items():
        timed = users
        if name == "two_sequence_exact" and args.timing_users:
            timed = users[: args.timing_users]  # timing only: a few users give seconds per user
        print(f"adapting {len(timed)} users: {name}", file=sys.stderr, flush=True)
        seconds[name] = round(adapt_all(rm, timed, args.max_support, **update), 3)
        if name != "two_sequence_exact":
            measured[name] = measure(rm, users, args.max_query, args.max_new_tokens)
    results = {
        metric: compare(measured["shared_exact"][metric], measured["shared_first_order"][metric])
        for metric in ("policy_accuracy", "rouge1")
    }
    users_n = min((r["users"] for r in results.values()), default=0)
    moves = any(r["moves"] for r in results.values())
    # a difference that moves decides even on few users; "stays" needs a trusted CI
    decision = "exact" if moves else "first-order" if users_n >= MIN_USERS else "undecided"
    speedups = {"first_order_steps": seconds["shared_exact"] / seconds["shared_first_order"]}
    if "two_sequence_exact" in seconds:
        speedups["shared_prompt"] = seconds["two_sequence_exact"] / seconds["shared_exact"]
        speedups["total"] = seconds["two_sequence_exact"] / seconds["shared_first_order"]
    return {
        "benchmark": "pdpo_adaptation_validation_tldr",
        "settings": vars(args),
        "train_steps": len(history),
        "train_seconds": round(train_seconds, 1),
        "final_train_loss": round(history[-1]["loss"], 4) if history else None,
        "adapt_lr": rm.config.adapt_lr or rm.config.user_lr,
        "adapt_steps": rm.config.adapt_steps,
        "adapt_seconds_per_user": seconds,
        "speedup": {k: round(v, 2) for k, v in speedups.items()},
        "comparison_first_order_minus_exact": results,
        "rule": "exact becomes the default if a difference's 95% CI excludes 0 or "
        f"|difference| > {THRESHOLD_POINTS:g} point",
        "decision": decision,
        "trusted": users_n >= MIN_USERS,
        "note": None
        if users_n >= MIN_USERS
        else f"only {users_n} users: the CI is not trusted (at least {MIN_USERS})",
        "cpu_count": os.cpu_count(),
    }


if __name__ == "__main__":
    main()
