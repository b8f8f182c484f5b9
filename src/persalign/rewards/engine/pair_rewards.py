"""Rewards of preference pairs for training, with one shared prompt per pair and token budgets.

    chosen, rejected = pair_rewards(rm, pairs)                 # [B] each, with gradients
    chosen, rejected, loss = backward_pair_loss(rm, pairs)     # loss.backward() done, exactly
    hidden, valid = response_hidden(rm, pairs)                 # [2n, R, H] frozen features
    last = last_hidden(rm, pairs)                              # [2B, H] LoRE-Alt's features
    chosen, rejected = rewards_of(rm, items, users, mode, z=z) # VPL: sampled latents z [B, d]

``shared_prompt_mode(rm)`` says how a method's pairs are encoded: "hidden" (the reward is
``head_values`` of the backbone's hidden state at each response position), "logprobs" (a
likelihood reward: log p of each response token, no soft tokens, no reference model; GenARM), or
None (two sequences per pair: the method sets ``shares_prompt = False``, e.g. P-DPO's soft tokens
go before the prompt, or ``config.shared_prompt`` is off). The same modes serve training
(``backward_pair_loss``, VPL's ``rewards_of(..., z=z)``, LoRE-Alt's ``last_hidden``), adaptation
features (``response_hidden``) and evaluation (``pair_eval.pair_prefix_rewards_shared``).

``backward_pair_loss`` splits a batch into micro-batches of at most ``max_tokens_per_microbatch``
padded tokens (length buckets). With one micro-batch it is the plain forward/backward. With
several it is exact for any ``pair_loss``, even one that couples the pairs (a margin, a length
normalisation, a batch statistic): a first pass without gradients gives every reward, the loss
and dloss/dreward are computed on those (detached) rewards, then each micro-batch runs again
with gradients and back-propagates sum(reward * dloss/dreward), which is the chain rule of the
full batch. Only one micro-batch's graph is alive at a time; the price is one extra forward
without gradients. The RNG state is replayed so dropout masks match between the two passes.

Frozen-backbone training (``backbone_training="frozen"``): while ``fit`` runs,
``rm.training_features`` holds the cached features of every training response
(``features.FeatureTable``), and ``pair_rewards``, ``backward_pair_loss`` and ``last_hidden``
read them instead of running the backbone (the same head and aggregation:
``features.sequence_values``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from persalign.rewards.engine.aggregation import aggregate, response_index
from persalign.rewards.engine.pair_batching import (
    PairTokens,
    SharedBatch,
    collate_shared,
    collate_two,
    length_buckets,
    shared_cost,
    tokenize_pairs,
    two_sequence_cost,
)
from persalign.types import Preference

if TYPE_CHECKING:  # annotations only: RewardModel calls into this module
    from persalign.rewards.base import RewardModel


def shared_prompt_mode(rm: RewardModel) -> str | None:
    """ "hidden", "logprobs" or None (two sequences per pair); see the module docstring."""
    if not (rm.shares_prompt and rm.config.shared_prompt):
        return None
    if not rm.cumulative:
        return "hidden"
    likelihood = hasattr(rm, "reward_scale") and hasattr(rm, "soft_tokens")
    if likelihood and not getattr(rm, "uses_reference", True) and rm.aggregation == "sum":
        return "logprobs"
    return None


def declared_eval_mode(rm: RewardModel) -> str | None:
    """The method's declared ``pair_eval_mode`` when its training encoding
    (``shared_prompt_mode``) agrees with it, else None (``pair_eval.eval_mode`` for a reward
    model)."""
    declared = type(rm).pair_eval_mode
    return declared if declared is not None and shared_prompt_mode(rm) == declared else None


def microbatches(rm: RewardModel, items: Sequence[PairTokens], mode: str | None) -> list[list[int]]:
    """Pair indices grouped under the token budget (length buckets)."""
    cost = shared_cost if mode else two_sequence_cost
    return length_buckets([cost(it) for it in items], rm.config.max_tokens_per_microbatch)


def rewards_of(
    rm: RewardModel,
    items: Sequence[PairTokens],
    users: Sequence[str],
    mode: str | None,
    z: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence rewards [b] of the chosen and rejected responses of one micro-batch; ``z``
    [b, D] replaces ``rm.user_vectors(users)`` (VPL's latents sampled from its encoder)."""
    pad_id = rm.formatter.tokenizer.pad_token_id
    device = rm.backbone.device
    if mode is None:
        batch = collate_two(items, pad_id).to(device)
        both = {} if z is None else {"z": torch.cat([z, z])}  # [2b, D] chosen rows, rejected rows
        prefix = rm.batch_prefix_rewards(batch, list(users) * 2, **both)  # [2b, R]
        last = prefix[torch.arange(2 * len(items)), batch.response_lengths - 1]  # [2b]
        return last[: len(items)], last[len(items) :]
    rows = torch.arange(len(items), device=device)
    chosen, rejected = (
        prefix[rows, valid_lengths - 1]  # [b]
        for prefix, valid_lengths in shared_prefix_rewards(rm, items, users, mode, z)
    )
    return chosen, rejected


def shared_prefix_rewards(
    rm: RewardModel,
    items: Sequence[PairTokens],
    users: Sequence[str],
    mode: str,
    z: torch.Tensor | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(prefix rewards [b, R], lengths [b])] of the chosen then the rejected responses, from
    one shared-prompt row per pair (``mode`` "hidden" or "logprobs"); ``z`` as in
    ``rewards_of`` (default: ``rm.user_vectors(users)``, which raises on an unknown user)."""
    pad_id = rm.formatter.tokenizer.pad_token_id
    shared = collate_shared(items, pad_id, rm.backbone.dtype).to(rm.backbone.device)
    hidden, _ = rm.backbone.hidden(shared.input_ids, shared.attention_mask, shared.position_ids)
    z = rm.user_vectors(users) if z is None else z
    out = []
    for side in ("chosen", "rejected"):
        index, valid = shared.response_index(side)  # [b, R]
        if mode == "hidden":
            values = rm.head_values(gather_positions(hidden, index).float(), z)  # [b, R]
        else:
            values = shared_logprobs(rm, hidden, shared, side) * rm.reward_scale()  # [b, R]
        out.append((aggregate(values, valid, rm.aggregation), valid.sum(dim=1)))  # [b, R], [b]
    return out


def gather_positions(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """hidden [b, T, H] at positions index [b, R] -> [b, R, H]."""
    return hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))


def shared_logprobs(rm: RewardModel, hidden: torch.Tensor, shared: SharedBatch, side: str):
    """log p(y_t | x, y_<t) of one side's response tokens, [b, R] (0 beyond each response)."""
    index, valid = shared.response_index(side)
    states = gather_positions(hidden, shared.predictor_index(side))  # [b, R, H]
    logits = rm.backbone.lm_head(states).float()  # [b, R, V]
    targets = shared.input_ids.gather(1, index)  # [b, R]
    picked = logits.gather(-1, targets[..., None]).squeeze(-1)  # [b, R]
    return (picked - logits.logsumexp(dim=-1)) * valid


def pair_rewards(
    rm: RewardModel, pairs: Sequence[Preference], z: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence rewards (with gradients) of the chosen and rejected responses, [B] each, in one
    forward pass (no token budget: for callers that keep the whole graph anyway); ``z`` as in
    ``rewards_of``. During frozen-backbone training: from the cached features."""
    table = getattr(rm, "training_features", None)
    if table is not None:
        return table.pair_rewards(rm, pairs, z)
    mode = shared_prompt_mode(rm)
    items = tokenize_pairs(rm.formatter, pairs)
    return rewards_of(rm, items, [p.user for p in pairs], mode, z)


def backward_pair_loss(
    rm: RewardModel, pairs: Sequence[Preference]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Back-propagate ``rm.pair_loss`` of ``pairs`` under the token budget; returns the
    (detached) chosen and rejected rewards [B] and the loss."""
    if getattr(rm, "training_features", None) is not None:  # frozen: the head alone, no budget
        chosen, rejected = pair_rewards(rm, pairs)
        loss = rm.pair_loss(chosen, rejected, pairs)
        loss.backward()
        return chosen.detach(), rejected.detach(), loss.detach()
    mode = shared_prompt_mode(rm)
    items = tokenize_pairs(rm.formatter, pairs)
    users = [p.user for p in pairs]
    groups = microbatches(rm, items, mode)
    if len(groups) == 1:
        chosen, rejected = rewards_of(rm, items, users, mode)
        loss = rm.pair_loss(chosen, rejected, pairs)
        loss.backward()
        return chosen.detach(), rejected.detach(), loss.detach()
    device = rm.backbone.device
    chosen = torch.zeros(len(pairs), device=device)
    rejected = torch.zeros(len(pairs), device=device)
    states = []
    for group in groups:
        states.append(_rng_state())
        with torch.no_grad():
            c, r = rewards_of(rm, [items[i] for i in group], [users[i] for i in group], mode)
        index = torch.tensor(group, device=device)
        chosen[index], rejected[index] = c.float(), r.float()
    chosen.requires_grad_(True)
    rejected.requires_grad_(True)
    loss = rm.pair_loss(chosen, rejected, pairs)
    loss.backward()  # dloss/dreward into chosen.grad, rejected.grad (and any direct terms)
    for group, state in zip(groups, states, strict=True):
        _set_rng_state(state)
        c, r = rewards_of(rm, [items[i] for i in group], [users[i] for i in group], mode)
        index = torch.tensor(group, device=device)
        surrogate = (c * chosen.grad[index]).sum() + (r * rejected.grad[index]).sum()
        surrogate.backward()
    return chosen.detach(), rejected.detach(), loss.detach()


def last_hidden(rm: RewardModel, pairs: Sequence[Preference]) -> torch.Tensor:
    """Hidden states (float32, with gradients) at the last token of the chosen then rejected
    responses, [2B, H]: one shared-prompt row per pair in "hidden" mode, else two sequences
    (frozen-backbone training: the cached features)."""
    table = getattr(rm, "training_features", None)
    if table is not None:
        return table.pooled(pairs, "last").to(rm.backbone.device)
    items = tokenize_pairs(rm.formatter, pairs)
    pad_id, device = rm.formatter.tokenizer.pad_token_id, rm.backbone.device
    if shared_prompt_mode(rm) != "hidden":
        batch = collate_two(items, pad_id).to(device)
        hidden, _ = rm.backbone.hidden(batch.input_ids, batch.attention_mask, batch.position_ids)
        rows = torch.arange(2 * len(items), device=device)
        return hidden.float()[rows, batch.last_index]  # [2B, H]
    shared = collate_shared(items, pad_id, rm.backbone.dtype).to(device)
    hidden, _ = rm.backbone.hidden(shared.input_ids, shared.attention_mask, shared.position_ids)
    rows = torch.arange(len(items), device=device)
    last = []
    for side in ("chosen", "rejected"):
        index, valid = shared.response_index(side)  # [B, R]
        last.append(index[rows, valid.sum(dim=1) - 1])  # [B] each response's last position
    return hidden.float()[torch.cat([rows, rows]), torch.cat(last)]  # [2B, H]


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


@torch.no_grad()
def response_hidden(rm: RewardModel, pairs: Sequence[Preference]) -> tuple[torch.Tensor, ...]:
    """Hidden states [2n, R, H] (float32) of the chosen then rejected response tokens and their
    validity [2n, R]: the prompt encoded once per pair unless the method cannot share it."""
    return items_hidden(rm, tokenize_pairs(rm.formatter, pairs))


@torch.no_grad()
def items_hidden(rm: RewardModel, items: Sequence[PairTokens]) -> tuple[torch.Tensor, ...]:
    """``response_hidden`` of tokenized pairs: [2n, R, H] float32 and validity [2n, R]."""
    mode = "hidden" if shared_prompt_mode(rm) == "hidden" else None
    n, device = len(items), rm.backbone.device
    width = max(max(len(it.chosen), len(it.rejected)) for it in items)
    hidden = torch.zeros(2 * n, width, rm.backbone.hidden_size, device=device)
    valid = torch.zeros(2 * n, width, dtype=torch.bool, device=device)
    pad_id = rm.formatter.tokenizer.pad_token_id
    for group in microbatches(rm, items, mode):
        part = [items[i] for i in group]
        rows = torch.tensor(group, device=device)
        sides = _shared_sides(rm, part, pad_id) if mode else _two_sides(rm, part, pad_id)
        for offset, (states, ok) in zip((0, n), sides, strict=True):
            hidden[rows + offset, : states.shape[1]] = states.float()
            valid[rows + offset, : ok.shape[1]] = ok
    return hidden, valid


def _shared_sides(rm: RewardModel, part: Sequence[PairTokens], pad_id: int):
    shared = collate_shared(part, pad_id, rm.backbone.dtype).to(rm.backbone.device)
    states, _ = rm.backbone.hidden(shared.input_ids, shared.attention_mask, shared.position_ids)
    out = []
    for side in ("chosen", "rejected"):
        index, ok = shared.response_index(side)
        out.append((gather_positions(states, index), ok))
    return out


def _two_sides(rm: RewardModel, part: Sequence[PairTokens], pad_id: int):
    from_rows = collate_two(part, pad_id).to(rm.backbone.device)
    states, _ = rm.backbone.hidden(
        from_rows.input_ids, from_rows.attention_mask, from_rows.position_ids
    )
    index, ok = response_index(from_rows)  # [2b, R]
    gathered = gather_positions(states, index)
    b = len(part)
    return [(gathered[:b], ok[:b]), (gathered[b:], ok[b:])]
