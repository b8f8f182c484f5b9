"""Naive reference implementations: slow, obviously right, for tests and benchmarks.

    tokens = naive_args(policy, rm, prompt, user, k=10, lam=1.0, steps=32)
    tokens, steps = naive_args_steps(policy, rm, prompt, user, k=10, lam=1.0, steps=32)
    steps[0].logp, steps[0].rewards, steps[0].chosen    # what decided the first token

Both recompute the policy over the whole sequence and the reward model over prompt + prefix +
candidate from scratch for every candidate: no cache, no batch, no candidate masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from persalign.models.encoding import pad_sequences


@dataclass
class ArgsStep:
    """One greedy ARGS step: the policy's top-k candidates, their terms, the one chosen."""

    ids: list[int]  # [k] candidate token ids, the policy's top-k
    logp: list[float]  # [k] log pi(v | x, y_<t)
    rewards: list[float]  # [k] r(x, y_<t + v)
    chosen: int  # index of the chosen candidate: argmax of logp + lam * rewards

    def decided_by(self) -> str:
        """ "policy" when the chosen token is the policy's pick and not the reward's,
        "reward" when it is the reward's and not the policy's, else "both" or "neither"."""
        best_logp = max(range(len(self.ids)), key=self.logp.__getitem__)
        best_reward = max(range(len(self.ids)), key=self.rewards.__getitem__)
        policy, reward = self.chosen == best_logp, self.chosen == best_reward
        return {(1, 0): "policy", (0, 1): "reward", (1, 1): "both"}.get((policy, reward), "neither")


def args_scores(logp: list[float], rewards: list[float], lam: float) -> list[float]:
    """ARGS (paper Eq. 1): log pi + lam * r for each candidate."""
    return [lp + lam * r for lp, r in zip(logp, rewards, strict=True)]


def naive_args_steps(
    policy,
    rm,
    prompt: str,
    user: str,
    k: int,
    lam: float,
    steps: int,
    ignore_eos: bool = False,
    combine: Callable[[list[float], list[float], float], list[float]] = args_scores,
) -> tuple[list[int], list[ArgsStep]]:
    """Greedy ARGS recomputing the policy and the reward model from scratch for every candidate;
    the tokens (without the final eos) and every step's candidates and terms. ``combine``: the
    candidates' scores from their log-probs, rewards and lambda (a reward-guided variant)."""
    prompt_ids = policy.formatter.prompt_ids(prompt)
    rm_prompt = rm.formatter.prompt_ids(prompt)
    eos = policy.eos_ids()
    device = policy.device
    tokens: list[int] = []
    trace: list[ArgsStep] = []
    for _ in range(steps):
        with torch.no_grad():
            ids = torch.tensor([prompt_ids + tokens], device=device)
            logits = policy.model(input_ids=ids).logits[0, -1].float()  # [V]
        if ignore_eos:
            logits[sorted(eos)] = float("-inf")
        top_logp, top_ids = torch.log_softmax(logits, -1).topk(k)  # [k]
        rewards = []
        for cand in top_ids.tolist():
            batch = pad_sequences([rm_prompt], [[*tokens, cand]], 0, "right")
            with torch.no_grad():
                prefix = rm.batch_prefix_rewards(batch.to(rm.backbone.device), [user])  # [1, R]
            rewards.append(float(prefix[0, len(tokens)]))
        logp = top_logp.tolist()
        scores = combine(logp, rewards, lam)
        chosen = max(range(k), key=scores.__getitem__)
        trace.append(ArgsStep(top_ids.tolist(), logp, rewards, chosen))
        best = int(top_ids[chosen])
        if best in eos:
            break
        tokens.append(best)
    return tokens, trace


def naive_args(
    policy, rm, prompt: str, user: str, k: int, lam: float, steps: int, ignore_eos: bool = False
) -> list[int]:
    """Greedy ARGS recomputing the policy and the reward model from scratch for every candidate."""
    return naive_args_steps(policy, rm, prompt, user, k, lam, steps, ignore_eos)[0]
