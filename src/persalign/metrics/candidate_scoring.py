"""Many responses to one prompt, the prompt encoded once: the ground-truth rank's candidates.

    groups = [["the user's title", "negative 1", "negative 2"], ...]   # one list per prompt
    logp, tokens = candidate_logprob_sums(policy, prompt_ids, groups, batch_size=8)
    logp.shape, tokens.shape          # [sum of group sizes] each, in group order
    rewards = candidate_reward_sums(rm, prompts, groups, users, batch_size=8)   # [same]

Each prompt and its K candidate responses are laid out as ONE row ``[prompt, y_1, ..., y_K,
pad]`` with an additive 4D mask (``pair_batching.shared_mask``, the layout shared-prompt
training gives a pair): the prompt is causal, each response sees the prompt and its own earlier
tokens (never another response), and every response's positions continue from the prompt's end.
Each response's log-probabilities are then those of prompt + response on a row of its own (what
``scoring.policy_logprob_sums`` computes), up to float rounding, while the prompt is encoded once
instead of K times. Only the positions that predict a response token go through the LM head;
log-softmax and sums run in float64, as in ``scoring``.

``candidate_reward_sums`` does the same for the reward model where its prefix rewards are
``head_values`` of its hidden states (``pair_eval.eval_mode`` "hidden") or its own likelihood
alone (GenARM: beta times the log-prob sums of its LoRA LM, the same shared row), and falls back
to ``scoring.reward_sums`` (one row per response) otherwise (``shared_prompt`` off).
``candidate_soft_tokens.candidate_soft_token_sums`` scores with a method's own personalized
policy (P-DPO) on the same rows, the user's soft tokens in front.
``batch_size`` counts prompts (rows), each with all its candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from persalign.errors import DataError
from persalign.logs import track
from persalign.metrics.scoring import reward_sums, target_logprobs, token_rewards
from persalign.rewards.base import PrefixRewards
from persalign.rewards.engine.aggregation import aggregate
from persalign.rewards.engine.frozen_states import remembers
from persalign.rewards.engine.pair_batching import shared_mask
from persalign.rewards.engine.pair_eval import eval_mode
from persalign.rewards.methods._likelihood import LikelihoodRM

PAD = -1  # segment id of padding (0 is the prompt, j + 1 the j-th response)
HEAD_CHUNK = 64  # response positions per LM-head projection and float64 log-softmax


@dataclass
class CandidateBatch:
    """Rows ``[prompt, y_1, ..., y_K, pad]`` and where each response's tokens are."""

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, 1, T, T] additive (0 = attend)
    position_ids: torch.Tensor  # [B, T] long
    row: torch.Tensor  # [M] the row of each response (M responses in all)
    slot: torch.Tensor  # [M] its place in its row's group
    index: torch.Tensor  # [M, R] row positions of each response's tokens (clamped)
    valid: torch.Tensor  # [M, R] bool: a real token
    predictor: torch.Tensor  # [M, R] the position predicting each token (prompt end for t = 0)


def collate_candidates(
    prompts: Sequence[Sequence[int]],
    groups: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
    dtype: torch.dtype = torch.float32,
) -> CandidateBatch:
    """One right-padded row per prompt with all its responses, and its 4D mask."""
    width = max(len(p) + sum(len(r) for r in g) for p, g in zip(prompts, groups, strict=True))
    longest = max(len(r) for g in groups for r in g)
    rows, segments, positions = [], [], []
    row_of, slot, index, valid, predictor = [], [], [], [], []
    for b, (prompt, group) in enumerate(zip(prompts, groups, strict=True)):
        ids, seg, pos = list(prompt), [0] * len(prompt), list(range(len(prompt)))
        for j, response in enumerate(group):
            start, n = len(ids), len(response)
            ids += response
            seg += [j + 1] * n
            pos += range(len(prompt), len(prompt) + n)
            at = [start + t for t in range(n)]
            row_of.append(b)
            slot.append(j)
            index.append(at + [start] * (longest - n))
            valid.append([True] * n + [False] * (longest - n))
            predictor.append([len(prompt) - 1] + at[:-1] + [start] * (longest - n))
        pad = width - len(ids)
        rows.append(ids + [pad_id] * pad)
        segments.append(seg + [PAD] * pad)
        positions.append(pos + [0] * pad)
    return CandidateBatch(
        input_ids=torch.tensor(rows, dtype=torch.long),
        attention_mask=shared_mask(torch.tensor(segments), dtype, pad=PAD),
        position_ids=torch.tensor(positions, dtype=torch.long),
        row=torch.tensor(row_of, dtype=torch.long),
        slot=torch.tensor(slot, dtype=torch.long),
        index=torch.tensor(index, dtype=torch.long),
        valid=torch.tensor(valid, dtype=torch.bool),
        predictor=torch.tensor(predictor, dtype=torch.long),
    )


def _batches(costs: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices, longest first, ``batch_size`` rows at a time (order restored by callers)."""
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _offsets(groups: Sequence[Sequence[object]]) -> list[int]:
    """Flat index of each group's first response."""
    out, at = [], 0
    for group in groups:
        out.append(at)
        at += len(group)
    return out


def _collate(prompt_ids, ids, rows: list[int], offsets: list[int], pad_id: int, dtype):
    """(CandidateBatch of ``rows``, [M] flat index of each of its responses)."""
    batch = collate_candidates([prompt_ids[i] for i in rows], [ids[i] for i in rows], pad_id, dtype)
    flat = torch.tensor([offsets[i] for i in rows], dtype=torch.long)[batch.row] + batch.slot
    return batch, flat


@torch.no_grad()
def candidate_logprob_sums(
    policy,
    prompt_ids: Sequence[Sequence[int]],
    groups: Sequence[Sequence[str]],
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """([M] float64 sum_t log pi(y_t | x, y_<t), [M] lengths in policy tokens) of every response
    of every group (flat, in group order), each prompt encoded once (see module doc)."""
    return _logprob_sums(
        policy.model, policy.formatter, policy.tokenizer, policy.device, prompt_ids, groups,
        batch_size=batch_size, progress=progress,
    )  # fmt: skip


def _logprob_sums(
    model,  # a causal LM (get_decoder, get_output_embeddings)
    formatter,  # response_ids(text) in the model's tokens
    tokenizer,
    device: torch.device,
    prompt_ids: Sequence[Sequence[int]],
    groups: Sequence[Sequence[str]],
    *,
    batch_size: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``candidate_logprob_sums`` for any causal LM: the policy's, or GenARM's own."""
    if any(not p for p in prompt_ids):
        raise DataError("an empty policy prompt: log pi of the first response token is undefined")
    ids = [[formatter.response_ids(r) for r in group] for group in groups]
    for group, texts in zip(ids, groups, strict=True):
        for response, text in zip(group, texts, strict=True):
            if not response:
                raise DataError(f"a response is empty (nothing to score): {text[:60]!r}")
    offsets = _offsets(groups)
    sums = torch.zeros(sum(len(g) for g in groups), dtype=torch.float64)
    lengths = torch.tensor([len(r) for g in ids for r in g], dtype=torch.long)
    pad_id = tokenizer.pad_token_id
    pad_id = tokenizer.eos_token_id if pad_id is None else pad_id
    dtype = next(model.parameters()).dtype
    costs = [len(p) + sum(len(r) for r in g) for p, g in zip(prompt_ids, ids, strict=True)]
    for rows in track(_batches(costs, batch_size), "candidate log-probs", show=progress):
        batch, flat = _collate(prompt_ids, ids, rows, offsets, pad_id or 0, dtype)
        hidden = model.get_decoder()(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            position_ids=batch.position_ids.to(device),
            use_cache=False,
        ).last_hidden_state  # [b, T, H]
        add_response_logprobs(sums, flat, batch, hidden, model.get_output_embeddings())
    return sums, lengths


def add_response_logprobs(
    sums: torch.Tensor,  # [M] float64, added to in place
    flat: torch.Tensor,  # [m] the flat index of each response of ``batch``
    batch: CandidateBatch,
    hidden: torch.Tensor,  # [b, shift + T, H] hidden states of the batch's rows
    head: torch.nn.Module,  # the LM head
    shift: int = 0,  # positions in front of each row (soft tokens) that ``batch`` does not know
) -> None:
    """Add each response's sum_t log p(y_t | ...) to ``sums``: the LM head on the positions that
    predict a response token only, in chunks, log-softmax in float64."""
    picked = batch.valid.nonzero()  # [n, 2] (response, step) of every real token
    m, t = picked[:, 0], picked[:, 1]
    rows = batch.row[m].to(hidden.device)
    where = (batch.predictor[m, t] + shift).to(hidden.device)
    targets = batch.input_ids[batch.row[m], batch.index[m, t]].to(hidden.device)  # [n]
    logp = torch.zeros(len(m), dtype=torch.float64)
    for start in range(0, len(m), HEAD_CHUNK):
        part = slice(start, start + HEAD_CHUNK)
        logits = head(hidden[rows[part], where[part]])  # [c, V]
        logp[part] = target_logprobs(logits, targets[part]).cpu()
    sums.index_add_(0, flat[m], logp)


def _plain_likelihood(reward_model) -> bool:
    """A reward that is beta * sum log p of the model's own LM alone (GenARM): no reference
    model and no soft tokens, so its candidates can share one prompt row as the policy's do."""
    return (
        isinstance(reward_model, LikelihoodRM)
        and not reward_model.uses_reference
        and type(reward_model).soft_tokens is LikelihoodRM.soft_tokens
    )


@torch.no_grad()
def candidate_reward_sums(
    reward_model,
    prompts: Sequence[str],
    groups: Sequence[Sequence[str]],
    users: Sequence[str],
    *,
    batch_size: int = 8,
) -> torch.Tensor:
    """[M] float64 sum_t r(y_t | x, y_<t) (``scoring.reward_sums``) of every response of every
    group, flat in group order; one shared-prompt row per group where ``eval_mode`` is "hidden"
    or the reward is the model's own likelihood alone (GenARM: beta * its log-prob sums)."""
    if _plain_likelihood(reward_model):
        rm = reward_model
        was_training = rm.training
        rm.eval()
        try:
            sums, _ = _logprob_sums(
                rm.backbone.model, rm.formatter, rm.formatter.tokenizer, rm.backbone.device,
                [rm.formatter.prompt_ids(p) for p in prompts], groups,
                batch_size=batch_size, progress=False,
            )  # fmt: skip
        finally:
            rm.train(was_training)
        return rm.reward_scale() * sums
    if eval_mode(reward_model) != "hidden" or remembers(reward_model):  # the latter: states
        # remembered per response (engine/frozen_states.py), so shared rows would save nothing
        flat = [(p, r, u) for p, g, u in zip(prompts, groups, users, strict=True) for r in g]
        return reward_sums(
            reward_model,
            [f[0] for f in flat],
            [f[1] for f in flat],
            [f[2] for f in flat],
            batch_size=batch_size,
            progress=False,
        )
    rm = reward_model
    prompt_ids = [rm.formatter.prompt_ids(p) for p in prompts]
    ids = [[rm.formatter.response_ids(r) for r in group] for group in groups]
    offsets = _offsets(groups)
    sums = torch.zeros(sum(len(g) for g in groups), dtype=torch.float64)
    costs = [len(p) + sum(len(r) for r in g) for p, g in zip(prompt_ids, ids, strict=True)]
    device = rm.backbone.device
    was_training = rm.training
    rm.eval()
    try:
        for rows in _batches(costs, batch_size):
            pad_id = rm.formatter.tokenizer.pad_token_id or 0
            batch, flat = _collate(prompt_ids, ids, rows, offsets, pad_id, rm.backbone.dtype)
            hidden, _ = rm.backbone.hidden(
                batch.input_ids.to(device),
                batch.attention_mask.to(device),
                batch.position_ids.to(device),
            )  # [b, T, H]
            states = hidden[batch.row[:, None].to(device), batch.index.to(device)]  # [m, R, H]
            z = rm.user_vectors([users[rows[int(b)]] for b in batch.row])  # [m, D] or None
            valid = batch.valid.to(device)
            values = rm.head_values(states.float(), z)  # [m, R]
            prefix = aggregate(values, valid, rm.aggregation).cpu()  # [m, R]
            parts = PrefixRewards(prefix, batch.valid.sum(dim=1))
            sums[flat] = token_rewards(parts, bool(getattr(rm, "cumulative", False))).sum(dim=1)
    finally:
        rm.train(was_training)
    return sums
