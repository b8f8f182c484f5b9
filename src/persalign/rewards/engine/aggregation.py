"""From per-token values to prefix rewards: where each response token sits, and how a prefix's
reward is made of its tokens' values (the last one, a running sum, or a running mean).

    index, valid = response_index(batch)            # [B, R] positions of response tokens
    prefix = aggregate(values, valid, "mean")       # [B, R] r(x, y_<=t) for every t
"""

from __future__ import annotations

import torch

from persalign.models.encoding import EncodedBatch


def response_index(batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence positions of each row's response tokens, [B, R], and their validity, [B, R]."""
    lengths = batch.response_lengths  # [B]
    width = int(lengths.max())
    steps = torch.arange(width, device=lengths.device)  # [R]
    start = batch.last_index - lengths + 1  # [B] first response token
    valid = steps[None, :] < lengths[:, None]  # [B, R]
    index = (start[:, None] + steps[None, :]).clamp(max=batch.input_ids.shape[1] - 1)
    return index, valid


def aggregate(values: torch.Tensor, valid: torch.Tensor, how: str) -> torch.Tensor:
    """Per-response-token values [B, R] -> prefix rewards [B, R] (0 where not valid)."""
    values = values * valid
    if how == "last":
        out = values
    elif how == "sum":
        out = values.cumsum(dim=1)
    elif how == "mean":
        out = values.cumsum(dim=1) / valid.cumsum(dim=1).clamp(min=1)
    else:
        raise ValueError(f"unknown aggregation {how!r}")
    return out * valid
