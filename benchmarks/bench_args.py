"""Speed of reward-guided decoding (ARGS) against greedy decoding and the naive reference.

    python benchmarks/bench_args.py [--policy bundled:smollm2-135m-instruct] [--k 10]
    python benchmarks/bench_args.py --fused-only --tokens 4     # a smoke run of the fused part

The bundled SmolLM2-135M is both the policy and the reward model's backbone (a global-rm with
its LoRA, untrained: speed does not depend on the weights). A 60-token prompt, forced 32 and 64
new tokens (eos suppressed), batch 1 and 8. Prints one JSON object with seconds per generated
token, a per-step profile of ARGS at batch 1 (``profile_ms_per_step``: the policy step, the
reward step over the k candidates, top-k, commit) and the target ratios of issues 4 and 13:
- args_over_greedy_64 <= 2.0 (issue 4: 2.5); args_over_greedy_32 <= 2.2;
- naive_over_args_64 >= 5; args_64_over_32 <= 1.2;
- batch8_over_batch1_throughput >= 3; tokens_identical_to_naive.
These ``args_*`` figures are the two-model path (``fused: off``). Issue 23's fused path runs in
a child process holding one model (a frozen global-rm whose backbone is the policy's own model,
no LoRA), with its own greedy baseline: ``fused_over_greedy_64`` <= 1.4, ``fused_tokens_identical``
(the same reward model unfused), ``fused_peak_rss_mib`` (that process's peak).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT_WORDS = (
    "Generate a title for the following abstract of a paper: We study how personalized reward "
    "models behave when they guide decoding, and find that ranking accuracy does not predict "
    "what the guided model writes for each user in practice."
)


def prompt_of_tokens(policy, n: int) -> str:
    """A prompt whose rendered form is about ``n`` tokens (the chat template included)."""
    words = PROMPT_WORDS.split()
    text = ""
    for i in range(10 * n):
        candidate = (text + " " + words[i % len(words)]).strip()
        if len(policy.formatter.prompt_ids(candidate)) > n:
            break
        text = candidate
    return text


def rounded(figures: dict) -> dict:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in figures.items()}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def profile_args(policy, rm, prompt: str, k: int, lam: float, steps: int) -> dict[str, float]:
    """Milliseconds per ARGS step of each part, batch 1 (the chooser's own calls, timed)."""
    from persalign.decoding import GenerationRequest
    from persalign.decoding.args import ArgsChooser, ArgsSettings

    parts = dict.fromkeys(("policy_step", "reward_step", "top_k", "commit", "total"), 0.0)
    state = policy.start([policy.formatter.prompt_ids(prompt)], ["anyone"])
    chooser = ArgsChooser(rm, ArgsSettings(k=k, lam=lam, fused="off"), policy)
    chooser.start([GenerationRequest("q", "anyone", prompt)])
    clock = time.perf_counter
    for _ in range(steps):
        t0 = clock()
        top_logp, top_ids = chooser.candidates(state.logits)
        t1 = clock()
        rewards = rm.step_rewards(chooser.state, top_ids)
        t2 = clock()
        choice = (top_logp + lam * rewards).argmax(dim=-1)
        rm.commit(chooser.state, choice)
        t3 = clock()
        policy.advance(state, top_ids.gather(1, choice[:, None])[:, 0])
        t4 = clock()
        spans = (t4 - t3, t2 - t1, t1 - t0, t3 - t2, t4 - t0)  # the order of ``parts``
        for name, seconds in zip(parts, spans, strict=True):
            parts[name] += seconds
    return {name: round(1000 * seconds / steps, 2) for name, seconds in parts.items()}


def fused_only(policy_spec: str, k: int, lam: float, prompt_tokens: int, tokens: int) -> dict:
    """Greedy, fused and unfused ARGS (batch 1, ``tokens`` forced tokens) with one model in
    memory: the reward model's frozen backbone is the policy's own model."""
    from persalign.decoding import GenerationRequest, Policy, create_decoder
    from persalign.decoding.fused_args import fused_reason
    from persalign.errors import validated
    from persalign.rewards import METHODS
    from persalign.rewards.engine.backbone import Backbone
    from persalign.sysinfo import peak_rss_mib

    torch.manual_seed(0)
    policy = Policy.load(policy_spec)
    cls = METHODS.get("global-rm")
    config = validated(cls.config_class, {"backbone": policy_spec})
    rm = cls(config, backbone=Backbone(policy.model, None), tokenizer=policy.tokenizer)
    reason = fused_reason(policy, rm)
    if reason:
        raise SystemExit(f"bench_args: cannot fuse: {reason}")
    prompt = prompt_of_tokens(policy, prompt_tokens)
    request = [GenerationRequest("q", "anyone", prompt)]

    def run(decoder: str, **extra) -> tuple[float, list[int]]:
        dec = create_decoder(
            decoder, policy, reward_model=rm, max_new_tokens=tokens, ignore_eos=True, **extra
        )
        dec.generate(request, progress=False)  # warm-up
        out: list = []
        seconds = timed(lambda: out.extend(dec.generate(request, progress=False)))
        assert len(out[0].tokens) == tokens
        return seconds / tokens, out[0].tokens

    greedy, _ = run("zero-shot")
    fused, fused_tokens = run("args", lam=lam, k=k, fused="on")
    _, unfused_tokens = run("args", lam=lam, k=k, fused="off")
    return {
        f"fused_greedy_s_per_token_{tokens}": greedy,
        f"fused_s_per_token_{tokens}": fused,
        f"fused_over_greedy_{tokens}": fused / greedy,
        "fused_tokens_identical": fused_tokens == unfused_tokens,
        "fused_peak_rss_mib": peak_rss_mib(),
    }


def fused_child(args: argparse.Namespace, tokens: int) -> dict:
    """``fused_only`` in a fresh process, so its peak RSS is that of one model."""
    command = [sys.executable, __file__, "--fused-only", "--tokens", str(tokens)]
    command += ["--policy", args.policy, "--k", str(args.k), "--lam", str(args.lam)]
    command += ["--prompt-tokens", str(args.prompt_tokens)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--prompt-tokens", type=int, default=60)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--fused-only", action="store_true", help="Only the fused part, in this process."
    )
    parser.add_argument("--tokens", type=int, default=64, help="Forced tokens of the fused part.")
    args = parser.parse_args()
    if args.fused_only:
        figures = fused_only(args.policy, args.k, args.lam, args.prompt_tokens, args.tokens)
        print(
            json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in figures.items()})
        )
        return

    from tests.reference import naive_args

    from persalign.decoding import GenerationRequest, Policy, create_decoder
    from persalign.logs import setup_logging
    from persalign.rewards import create
    from persalign.sysinfo import peak_rss_mib

    setup_logging(0)
    torch.manual_seed(0)
    policy = Policy.load(args.policy)
    rm = create("global-rm", backbone=args.policy)
    prompt = prompt_of_tokens(policy, args.prompt_tokens)

    def requests(batch: int) -> list[GenerationRequest]:
        return [GenerationRequest(f"q{i}", "anyone", prompt) for i in range(batch)]

    def per_token(decoder: str, tokens: int, batch: int) -> tuple[float, list]:
        extra = {"lam": args.lam, "k": args.k, "fused": "off"} if decoder == "args" else {}
        dec = create_decoder(
            decoder,
            policy,
            reward_model=rm,
            max_new_tokens=tokens,
            ignore_eos=True,
            batch_size=batch,
            **extra,
        )
        dec.generate(requests(batch)[:1], progress=False)  # warm-up
        out: list = []
        seconds = timed(lambda: out.extend(dec.generate(requests(batch), progress=False)))
        assert all(len(g.tokens) == tokens for g in out)
        return seconds / (tokens * batch), out

    result: dict = {
        "benchmark": "args_decoding",
        "k": args.k,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(policy.device),
        "prompt_tokens": len(policy.formatter.prompt_ids(prompt)),
    }
    for tokens in (32, 64):
        result[f"greedy_s_per_token_{tokens}"], _ = per_token("zero-shot", tokens, 1)
        result[f"args_s_per_token_{tokens}"], outs = per_token("args", tokens, 1)
    result["profile_ms_per_step"] = profile_args(policy, rm, prompt, args.k, args.lam, 64)
    result["args_batch8_s_per_token_64"], _ = per_token("args", 64, 8)
    if not args.skip_naive:
        naive: list[int] = []
        seconds = timed(
            lambda: naive.extend(
                naive_args(policy, rm, prompt, "anyone", args.k, args.lam, 64, ignore_eos=True)
            )
        )
        result["naive_s_per_token_64"] = seconds / 64
        result["tokens_identical_to_naive"] = naive == outs[0].tokens
        result["naive_over_args_64"] = (
            result["naive_s_per_token_64"] / result["args_s_per_token_64"]
        )
    for tokens in (32, 64):
        result[f"args_over_greedy_{tokens}"] = (
            result[f"args_s_per_token_{tokens}"] / result[f"greedy_s_per_token_{tokens}"]
        )
    result["args_64_over_32"] = result["args_s_per_token_64"] / result["args_s_per_token_32"]
    result["batch8_over_batch1_throughput"] = (
        result["args_s_per_token_64"] / result["args_batch8_s_per_token_64"]
    )
    result["peak_rss_mib"] = peak_rss_mib()
    result.update(fused_child(args, 64))
    result = rounded(result)
    result["targets_met"] = {
        "args_over_greedy_64<=2.0": result["args_over_greedy_64"] <= 2.0,
        "args_over_greedy_32<=2.2": result["args_over_greedy_32"] <= 2.2,
        "naive_over_args_64>=5": result.get("naive_over_args_64", 0) >= 5,
        "args_64_over_32<=1.2": result["args_64_over_32"] <= 1.2,
        "batch8_over_batch1_throughput>=3": result["batch8_over_batch1_throughput"] >= 3,
        "fused_over_greedy_64<=1.4": result["fused_over_greedy_64"] <= 1.4,
        "fused_tokens_identical": result["fused_tokens_identical"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
