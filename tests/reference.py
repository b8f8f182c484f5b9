"""Naive reference implementations: slow, obviously right, for tests and benchmarks.

>>> tokens = naive_args(policy, rm, prompt, user, k=10, lam=1.0, steps=32)
"""

from __future__ import annotations

import torch

from persalign.models.encoding import pad_sequences


def naive_args(
    policy, rm, prompt: str, user: str, k: int, lam: float, steps: int, ignore_eos: bool = False
) -> list[int]:
    """Greedy ARGS recomputing the policy and the reward model from scratch for every candidate."""
    prompt_ids = policy.formatter.prompt_ids(prompt)
    rm_prompt = rm.formatter.prompt_ids(prompt)
    eos = policy.eos_ids()
    device = policy.device
    tokens: list[int] = []
    for _ in range(steps):
        with torch.no_grad():
            ids = torch.tensor([prompt_ids + tokens], device=device)
            logits = policy.model(input_ids=ids).logits[0, -1].float()
        if ignore_eos:
            logits[sorted(eos)] = float("-inf")
        top_logp, top_ids = torch.log_softmax(logits, -1).topk(k)
        scores = []
        for logp, cand in zip(top_logp.tolist(), top_ids.tolist(), strict=True):
            batch = pad_sequences([rm_prompt], [[*tokens, cand]], 0, "right")
            with torch.no_grad():
                prefix = rm.batch_prefix_rewards(batch.to(rm.backbone.device), [user])
            scores.append(logp + lam * float(prefix[0, len(tokens)]))
        best = int(top_ids[max(range(k), key=scores.__getitem__)])
        if best in eos:
            break
        tokens.append(best)
    return tokens
