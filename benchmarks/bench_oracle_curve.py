"""The oracle's lambda curve on a sim benchmark: how much reward-guided decoding with the users'
own reward r_u moves what the policy writes (prints one JSON object).

    python benchmarks/bench_oracle_curve.py runs/study_sim/sim            # the study's benchmark
    python benchmarks/bench_oracle_curve.py runs/study_sim/sim --lambdas 0 1 --max-users 4  # smoke
    python benchmarks/bench_oracle_curve.py runs/study_sim/sim_shared \
        --model runs/v6/study-sim/models/sim__global-rm__bundled-smollm2-135m-instruct__s0

``--model`` draws the same curve for a learned reward instead: a saved reward model folder (a
run's ``models/<job>``, trained and adapted to the benchmark's users), so a method's null result
can be told from a lambda too small for its reward's scale (``reward_spread`` in the output: the
reward's standard deviation over each user's query candidates, mean over users, as the report's
reward_spread table; the oracle's is the reference).

For every lambda of ``--lambdas`` it decodes every query prompt of the benchmark with ARGS guided
by the ``oracle`` reward method (r_u of each decoded prefix, docs/simulated-users.md) and the
bundled SmolLM2-135M-Instruct (the study's decoding: k, tokens, stop, prompt encoding as
``configs/study_sim.yaml``), then reports the true gain of each lambda over lambda 0 (the
policy's own greedy output, what zero-shot writes): the mean over users of the per-user mean
r_u(output) - r_u(lambda-0 output) of the same prompt (``metrics.true_gain``), with a 95%
percentile bootstrap CI over users (1000 resamples, seed 0; ``report.verdicts.paired_difference``)
and the true win rate (prompts where the lambda output's r_u is higher; ties lose). If the
oracle's gain did not rise with lambda, every null result on the benchmark would be about the
setup (policy, k, lambda), not about the reward methods.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", help="A sim benchmark folder (persalign data build sim).")
    parser.add_argument("--policy", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0, 0.5, 1, 2, 4, 8, 16])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--max-prompt-tokens", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-users", type=int, default=0, help="adaptation users; 0: all")
    parser.add_argument(
        "--model", default=None, help="a saved reward model folder to guide ARGS (the oracle: none)"
    )
    args = parser.parse_args()
    if 0.0 not in args.lambdas:
        raise SystemExit("--lambdas must include 0 (the reference: the policy's own output)")

    import torch

    import persalign.rewards as rewards
    from persalign.data import load_benchmark
    from persalign.decoding import GenerationRequest, Policy, create_decoder
    from persalign.logs import setup_logging
    from persalign.metrics.true_gain import true_gain
    from persalign.metrics.true_rm_accuracy import true_rm_accuracy
    from persalign.metrics.true_win_rate import true_win_rate
    from persalign.report.verdicts import paired_difference
    from persalign.serve.sharing import load_reward_for

    setup_logging(0)
    torch.manual_seed(0)
    bench = load_benchmark(Path(args.benchmark))
    query = list(bench.query)
    if args.max_users:
        keep = sorted({q.user for q in query})[: args.max_users]
        query = [q for q in query if q.user in keep]
    policy = Policy.load(args.policy, device="cpu", max_prompt_tokens=args.max_prompt_tokens)
    if args.model:
        # trained and adapted by its run's model job; on the policy's weights when its
        # backbone is frozen, so ARGS runs fused, as in the run's cells
        guide = load_reward_for(args.model, policy)
    else:
        guide = rewards.create(  # the reward settings of configs/study_sim.yaml
            "oracle", backbone=args.policy, use_chat_template=True, max_prompt_tokens=80,
            max_response_tokens=24,
        )  # fmt: skip
    guide.use_benchmark(bench)
    accuracy = true_rm_accuracy(guide, bench)  # every query pair of the benchmark
    spread = accuracy["spread"]["per_user"]
    requests = [GenerationRequest(q.id, q.user, q.prompt) for q in query]
    outputs, seconds = {}, {}
    for lam in sorted(set(args.lambdas)):
        print(f"lambda {lam:g}: {len(requests)} prompts", file=sys.stderr, flush=True)
        decoder = create_decoder(
            "args", policy, reward_model=guide, lam=lam, k=args.k,
            max_new_tokens=args.max_new_tokens, stop=("\n",), batch_size=args.batch_size,
        )  # fmt: skip
        start = time.perf_counter()
        gens = decoder.generate(requests, progress=False)
        seconds[lam] = round(time.perf_counter() - start, 1)
        outputs[lam] = [{"user": g.user, "id": g.id, "text": g.text} for g in gens]
    curve = []
    for lam in sorted(outputs):
        gain = true_gain(bench, outputs[lam], outputs[0.0])
        per_user = gain["per_user"]
        mean, ci, n = paired_difference(per_user, dict.fromkeys(per_user, 0.0), n_boot=1000)
        pairs = zip(outputs[lam], outputs[0.0], strict=True)
        changed = sum(a["text"] != b["text"] for a, b in pairs)
        curve.append({
            "lambda": lam,
            "true_gain": None if mean is None else round(mean, 4),
            "ci95": None if ci is None else [round(ci[0], 4), round(ci[1], 4)],
            "ci_excludes_0": bool(ci is not None and (ci[0] > 0 or ci[1] < 0)),
            "true_win_rate": round(true_win_rate(bench, outputs[lam], outputs[0.0])["rate"], 4),
            "outputs_changed": changed,
            "users": n,
            "decode_seconds": seconds[lam],
        })  # fmt: skip
    report = {
        "benchmark": str(args.benchmark),
        "policy": args.policy,
        "reward": args.model or "oracle",
        "true_rm_accuracy": accuracy["mean"],
        "reward_spread": round(sum(spread.values()) / max(1, len(spread)), 4),
        "prompts": len(requests),
        "users": len({r.user for r in requests}),
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "curve": curve,
        "rises": all(
            (b["true_gain"] or 0) >= (a["true_gain"] or 0) for a, b in itertools.pairwise(curve)
        ),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
