"""Can a study's reward methods learn its simulated users at all? A pilot before the study: train
each frozen-head method of a run config on a sim benchmark, adapt the adaptation users, and
score true RM accuracy on many held-out pairs per user (prints one JSON object).

    python benchmarks/pilot_sim_methods.py configs/study_sim.yaml         # the config's benchmark
    python benchmarks/pilot_sim_methods.py configs/study_sim.yaml --benchmark out/sim \\
        --methods global-rm,lore,pref --pairs-per-user 40 --users train --set lore.epochs=5

A study's cells score each user's 2 query pairs, so a method's true RM accuracy there has a CI
about 20 points wide. Here every scored user gets ``--pairs-per-user`` pairs of prompts it never
labelled (each prompt's pair as the benchmark's pairs have it; seeded), scored like the
``true_rm_accuracy`` metric: per user, the share of pairs the learned reward orders as r_u does
(r_u ties left out, a reward tie a miss), then the mean with a 95% bootstrap CI over users.
``--users train`` scores train users (their own parameters, learned in training) on prompts they
never labelled: does the method learn the users' structure at all, before adaptation?

Each method is built as the run builds it (``runs.config_checks.check_methods``: the reward
settings, then the method's own, validated; ``--set label.key=value`` overrides one, for a
what-if), seed
``--seed``. Methods that train their backbone (LoRA: GenARM and P-DPO in configs/study_sim.yaml)
and the oracle are skipped: the first are minutes each, the second is r_u. The first method pays
for the frozen features of every text (about 2 minutes on 2 CPU cores); the rest take seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path


def held_out_pairs(bench, users, per_user, seed):
    """Preferences (chosen, rejected in the benchmark's order, not a label) for ``per_user``
    prompts each user never labelled (seeded)."""
    from persalign.types import Preference

    pairs = {}
    labelled: dict[str, set[str]] = {}
    for p in [*bench.train, *bench.support, *bench.query]:
        pairs.setdefault(p.prompt, (p.chosen, p.rejected))
        labelled.setdefault(p.user, set()).add(p.prompt)
    rng = random.Random(seed)
    out = []
    for user in users:
        fresh = [x for x in sorted(pairs) if x not in labelled.get(user, set())]
        for k, prompt in enumerate(rng.sample(fresh, min(per_user, len(fresh)))):
            out.append(Preference(f"{user}/heldout-{k}", user, prompt, *pairs[prompt]))
    return out


def score(rm, truth, pairs):
    """True RM accuracy of ``rm`` on ``pairs`` (probe_sim_features.true_accuracy's fields)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from probe_sim_features import true_accuracy

    users, prompts = [p.user for p in pairs], [p.prompt for p in pairs]
    chosen = rm.sequence_rewards(prompts, [p.chosen for p in pairs], users)
    rejected = rm.sequence_rewards(prompts, [p.rejected for p in pairs], users)
    margins = dict(zip((p.id for p in pairs), (chosen - rejected).tolist(), strict=True))
    return true_accuracy(lambda p: margins[p.id], truth, pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="A run config (configs/study_sim.yaml).")
    parser.add_argument("--benchmark", help="A sim benchmark folder (default: the config's).")
    parser.add_argument("--methods", help="Method labels, comma-separated (default: all).")
    parser.add_argument("--pairs-per-user", type=int, default=40)
    parser.add_argument("--users", choices=("adapt", "train"), default="adapt")
    parser.add_argument("--max-users", type=int, default=48, help="Score at most this many.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="label.key=value")
    args = parser.parse_args()

    import torch

    import persalign.rewards as rewards
    from persalign.data import load_benchmark
    from persalign.logs import setup_logging
    from persalign.overrides import parse_overrides
    from persalign.runs.config import load_config
    from persalign.runs.config_checks import check_methods

    setup_logging(0)
    torch.manual_seed(args.seed)
    config = load_config(args.config)
    folder = args.benchmark or next(iter(config.benchmarks.values())).path
    bench = load_benchmark(Path(folder))
    truth = bench.true_reward
    if truth is None:
        raise SystemExit(f"{folder} is not a sim benchmark (no true_reward.json)")
    overrides = parse_overrides(args.set)  # label -> {key: value}
    for label, options in overrides.items():
        if not isinstance(options, dict):
            raise SystemExit(f"--set {label}=...: expected label.key=value")
    labels = args.methods.split(",") if args.methods else list(config.methods)
    adapt_users = bench.adapt_users()
    if args.users == "adapt":
        users = [u.user for u in adapt_users][: args.max_users]
    else:
        users = sorted({p.user for p in bench.train})[: args.max_users]
    pairs = held_out_pairs(bench, users, args.pairs_per_user, args.seed)
    reward_configs = check_methods(config)  # label -> the method's full config, as the run's
    out, skipped = {}, {}
    for label in labels:
        if label not in config.methods:
            known = ", ".join(config.methods)
            raise SystemExit(f"{label!r} is not a method of {args.config}: {known}")
        name = config.method_options(label)[0]
        options = {**reward_configs[label], **overrides.get(label, {}), "seed": args.seed}
        if name == "oracle" or options["backbone_training"] != "frozen":
            skipped[label] = "the oracle" if name == "oracle" else "trains its backbone"
            continue
        start = time.perf_counter()
        rm = rewards.create(name, **options)
        rm.use_benchmark(bench)
        history = rm.fit(bench.train)
        if args.users == "adapt":
            for user in adapt_users:
                rm.adapt(user.user, user.support)
        out[label] = {
            **score(rm, truth, pairs),
            "final_train_loss": round(float(history[-1]["loss"]), 4) if history else None,
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(label, json.dumps(out[label]), file=sys.stderr, flush=True)
    report = {
        "config": args.config,
        "benchmark": str(folder),
        "users": args.users,
        "scored_users": len(users),
        "pairs_per_user": args.pairs_per_user,
        "overrides": overrides,
        "methods": out,
        "skipped": skipped,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
