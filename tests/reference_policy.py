"""Naive per-prefix policy scores: slow, obviously right, for tests and benchmarks.

>>> logp, rewards = naive_terms(policy, rm, prompt, response, user)   # one pass per prefix
>>> naive_score("personal-rgd", logp, rewards, lam=0.5)

For every response position t: a fresh policy forward over prompt + y_<t gives log pi(y_t | ...),
and a fresh reward-model pass over the response truncated after t tokens gives r(x, y_<=t).
"""

from __future__ import annotations

import torch

from persalign.models.encoding import pad_sequences


def naive_logprobs(policy, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
    """log pi(y_t | x, y_<t) for every t, one unpadded policy forward per prefix."""
    out = []
    for t, token in enumerate(response_ids):
        ids = torch.tensor([prompt_ids + response_ids[:t]], device=policy.device)
        with torch.no_grad():
            logits = policy.model(input_ids=ids).logits[0, -1]  # [V]
        out.append(float(logits.double().log_softmax(-1)[token]))
    return out


def naive_prefix_rewards(rm, prompt: str, response: str, user: str) -> list[float]:
    """r(x, y_<=t) for every t, one reward-model pass on the response cut after t tokens."""
    prompt_ids = rm.formatter.prompt_ids(prompt)
    response_ids = rm.formatter.response_ids(response)
    out = []
    for t in range(1, len(response_ids) + 1):
        batch = pad_sequences([prompt_ids], [response_ids[:t]], 0, "right")
        with torch.no_grad():
            prefix = rm.batch_prefix_rewards(batch.to(rm.backbone.device), [user])  # [1, t]
        out.append(float(prefix[0, t - 1]))
    return out


def naive_terms(
    policy, rm, prompt: str, response: str, user: str, prompt_ids: list[int] | None = None
) -> tuple[list[float], list[float]]:
    """Per-token policy log-probs and (if ``rm``) per-prefix rewards of one response."""
    ids = policy.formatter.prompt_ids(prompt) if prompt_ids is None else list(prompt_ids)
    logp = naive_logprobs(policy, ids, policy.formatter.response_ids(response))
    rewards = naive_prefix_rewards(rm, prompt, response, user) if rm is not None else []
    return logp, rewards


def naive_score(scorer: str, logp: list[float], rewards: list[float], lam: float = 1.0) -> float:
    """Eqs. 4-7 from per-token terms (base/icl: mean log-prob; RGD: sums)."""
    if scorer in ("base", "icl"):
        return sum(logp) / len(logp)
    return sum(logp) + lam * sum(rewards)
