"""Preference pairs as token batches: one shared prompt per pair, length buckets, token budgets.

    items = tokenize_pairs(rm.formatter, pairs)             # prompt/chosen/rejected ids, once
    groups = length_buckets([shared_cost(i) for i in items], budget=8192)   # [[3, 0], [1, 2]]
    batch = collate_shared([items[i] for i in groups[0]], pad_id)
    batch.input_ids.shape, batch.attention_mask.shape       # [B, T], [B, 1, T, T]

A pair's two responses share its prompt, so ``collate_shared`` lays each pair out as one row
``[prompt, chosen, rejected, pad]`` with an additive 4D mask: the prompt is causal, each response
sees the prompt and its own earlier tokens (never the other response), and both responses'
positions continue from the prompt's end. Each response's hidden states, read at its own
positions, are then those of the two-sequence encoding (prompt + response on its own row), up to
float rounding, while the prompt is encoded once instead of twice. ``collate_two`` is the
two-sequence layout (chosen rows then rejected rows), for methods that cannot share the prompt.

``length_buckets`` sorts rows by cost (ties by index: deterministic) and packs them greedily into
groups whose padded token count stays under a budget, so padding stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from persalign.errors import DataError
from persalign.models.encoding import EncodedBatch, PromptFormatter, pad_sequences
from persalign.types import Preference


@dataclass(frozen=True)
class PairTokens:
    """Token ids of one preference pair (prompt rendered and cut once)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


@dataclass
class SharedBatch:
    """Pairs laid out as ``[prompt, chosen, rejected, pad]`` rows with a 4D mask."""

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, 1, T, T] additive (0 = attend)
    position_ids: torch.Tensor  # [B, T] long
    prompt_lengths: torch.Tensor  # [B] long
    chosen_lengths: torch.Tensor  # [B] long
    rejected_lengths: torch.Tensor  # [B] long

    def to(self, device: torch.device) -> SharedBatch:
        return SharedBatch(*(t.to(device) for t in vars(self).values()))

    def response_index(self, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Row positions [B, R] of the chosen or rejected tokens and their validity [B, R]."""
        lengths = self.chosen_lengths if side == "chosen" else self.rejected_lengths
        start = self.prompt_lengths + (self.chosen_lengths if side == "rejected" else 0)  # [B]
        steps = torch.arange(int(lengths.max()), device=lengths.device)  # [R]
        valid = steps[None, :] < lengths[:, None]  # [B, R]
        index = (start[:, None] + steps[None, :]).clamp(max=self.input_ids.shape[1] - 1)
        return index, valid

    def predictor_index(self, side: str) -> torch.Tensor:
        """[B, R] the position whose next-token distribution predicts each response token:
        the previous token of the same response, the prompt's last token for the first one."""
        index, _ = self.response_index(side)
        previous = index - 1
        previous[:, 0] = self.prompt_lengths - 1
        return previous.clamp(min=0)


def tokenize_pairs(formatter: PromptFormatter, pairs: Sequence[Preference]) -> list[PairTokens]:
    """Each pair's prompt and response ids (an empty tokenized response is a DataError)."""
    items = []
    for i, pair in enumerate(pairs):
        item = PairTokens(
            formatter.prompt_ids(pair.prompt),
            formatter.response_ids(pair.chosen),
            formatter.response_ids(pair.rejected),
        )
        if not item.chosen or not item.rejected:
            raise DataError(f"pair {i} ({pair.id}) has a response with no tokens")
        items.append(item)
    return items


def shared_cost(item: PairTokens) -> int:
    """Tokens of one shared-prompt row."""
    return len(item.prompt) + len(item.chosen) + len(item.rejected)


def two_sequence_cost(item: PairTokens) -> int:
    """Tokens of the pair's two rows (each padded to the longer: rows in a group share a width)."""
    return 2 * (len(item.prompt) + max(len(item.chosen), len(item.rejected)))


def length_buckets(costs: Sequence[int], budget: int | None) -> list[list[int]]:
    """Indices grouped so that ``len(group) * max(cost in group) <= budget`` (a row over budget
    goes alone); rows sorted by cost, longest first, ties by index. None: one group."""
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    if budget is None:
        return [order] if order else []
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * costs[groups[-1][0]] <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def collate_two(items: Sequence[PairTokens], pad_id: int) -> EncodedBatch:
    """The two-sequence layout: chosen rows [0, B), rejected rows [B, 2B), right-padded."""
    prompts = [it.prompt for it in items] * 2
    responses = [it.chosen for it in items] + [it.rejected for it in items]
    return pad_sequences(prompts, responses, pad_id, "right")


def collate_shared(
    items: Sequence[PairTokens], pad_id: int, dtype: torch.dtype = torch.float32
) -> SharedBatch:
    """One row per pair, ``[prompt, chosen, rejected]`` right-padded, with its 4D mask."""
    width = max(shared_cost(it) for it in items)
    rows, segments, positions = [], [], []
    for it in items:
        p, c, r = len(it.prompt), len(it.chosen), len(it.rejected)
        pad = width - p - c - r
        rows.append(it.prompt + it.chosen + it.rejected + [pad_id] * pad)
        segments.append([0] * p + [1] * c + [2] * r + [3] * pad)
        positions.append(list(range(p + c)) + list(range(p, p + r)) + [0] * pad)
    segment = torch.tensor(segments)  # [B, T] 0 prompt, 1 chosen, 2 rejected, 3 pad
    return SharedBatch(
        input_ids=torch.tensor(rows, dtype=torch.long),
        attention_mask=shared_mask(segment, dtype),
        position_ids=torch.tensor(positions, dtype=torch.long),
        prompt_lengths=torch.tensor([len(it.prompt) for it in items]),
        chosen_lengths=torch.tensor([len(it.chosen) for it in items]),
        rejected_lengths=torch.tensor([len(it.rejected) for it in items]),
    )


def shared_mask(segment: torch.Tensor, dtype: torch.dtype, pad: int = 3) -> torch.Tensor:
    """Additive mask [B, 1, T, T] from segment ids [B, T] (0: the prompt, ``pad``: padding, any
    other id: one response): causal; a key in a response segment is seen only by queries of that
    segment; pads see only themselves (no empty softmax row)."""
    length = segment.shape[1]
    steps = torch.arange(length)
    causal = steps[None, :] <= steps[:, None]  # [T(q), T(k)]
    query, key = segment[:, :, None], segment[:, None, :]  # [B, T, 1], [B, 1, T]
    allowed = causal[None] & ((key == 0) | (key == query)) & (key != pad)  # [B, T, T]
    eye = torch.eye(length, dtype=torch.bool)[None]
    allowed = torch.where(query == pad, eye, allowed)
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]  # [B, 1, T, T]
