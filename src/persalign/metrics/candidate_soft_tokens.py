"""A method's own personalized policy scoring many responses to one prompt, the prompt encoded
once: P-DPO's soft tokens e_u, then the prompt, then every candidate (the ground-truth rank).

    logp, tokens = candidate_soft_token_sums(pdpo, prompts, groups, users, batch_size=8)
    logp.shape, tokens.shape        # [sum of group sizes] each, in group order

The row is ``[e_u, prompt, y_1, ..., y_K, pad]``: the layout of ``candidate_scoring`` (each
response sees the prompt and its own earlier tokens, never another response) with the user's n
soft tokens put in front as input embeddings, causal among themselves and seen by every later
position, and every real position shifted by n. Each response's log-likelihood is then what
``personalized_logprob_sums`` gives it on a row of its own, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from persalign.metrics.candidate_scoring import (
    _batches,
    _collate,
    _offsets,
    add_response_logprobs,
)


def with_soft_prefix(mask: torch.Tensor, n: int) -> torch.Tensor:
    """An additive mask [B, 1, T, T] with ``n`` soft-token positions put in front: [B, 1, n + T,
    n + T], the soft tokens causal among themselves and seen by every position after them."""
    batch, _, length, _ = mask.shape
    out = mask.new_full((batch, 1, n + length, n + length), torch.finfo(mask.dtype).min)
    steps = torch.arange(n, device=mask.device)
    out[:, :, :n, :n].masked_fill_(steps[None, :] <= steps[:, None], 0.0)  # [n(q), n(k)] causal
    out[:, :, n:, :n] = 0.0
    out[:, :, n:, n:] = mask
    return out


@torch.no_grad()
def candidate_soft_token_sums(
    model,
    prompts: Sequence[str],
    groups: Sequence[Sequence[str]],
    users: Sequence[str],
    *,
    batch_size: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """([M] float64 sum_t log pi_theta(y_t | e_u, x, y_<t), [M] lengths in its tokens) of a
    method's own personalized policy (P-DPO: the user's soft tokens e_u before each prompt, its
    ``personalized_logprob_sums``), each row ``[e_u, prompt, y_1, ..., y_K]`` encoded once."""
    backbone, formatter = model.backbone, model.formatter
    prompt_ids = [formatter.prompt_ids(p) for p in prompts]
    ids = [[formatter.response_ids(r) for r in group] for group in groups]
    offsets = _offsets(groups)
    sums = torch.zeros(sum(len(g) for g in groups), dtype=torch.float64)
    lengths = torch.tensor([len(r) for g in ids for r in g], dtype=torch.long)
    costs = [len(p) + sum(len(r) for r in g) for p, g in zip(prompt_ids, ids, strict=True)]
    pad_id = formatter.tokenizer.pad_token_id or 0
    device, was_training = backbone.device, model.training
    model.eval()
    try:
        for rows in _batches(costs, batch_size):
            batch, flat = _collate(prompt_ids, ids, rows, offsets, pad_id, backbone.dtype)
            soft = model.soft_tokens(model.user_vectors([users[i] for i in rows]))  # [b, n, H]
            b, n = soft.shape[:2]
            input_ids = batch.input_ids.to(device)  # [b, T]
            embeds = torch.cat([soft.to(backbone.dtype), backbone.embed(input_ids)], dim=1)
            first = torch.arange(n, device=device).expand(b, n)
            positions = torch.cat([first, batch.position_ids.to(device) + n], dim=1)  # [b, n+T]
            mask = with_soft_prefix(batch.attention_mask.to(device), n)
            hidden, _ = backbone.hidden(None, mask, positions, inputs_embeds=embeds)
            add_response_logprobs(sums, flat, batch, hidden, backbone.lm_head, shift=n)
    finally:
        model.train(was_training)
    return sums, lengths
