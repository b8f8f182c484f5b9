"""Reward-guided decoding's hot path: k candidate tokens scored against one cached prefix.

    state = start_hidden(rm, prompt_ids, users)       # one forward over the prompts
    rewards = step_hidden(rm, state, candidates)      # [B, k], one forward of k tokens/row
    commit_hidden(rm, state, choice)                  # keep the chosen candidate's K/V

``prefill`` and ``score_candidates`` take the forward that computes hidden states, so fused
ARGS (``decoding.fused_args``) runs the same steps on the policy itself, whose weights the
reward model's frozen backbone shares: one forward and one cache serve both.

The k candidates of a row go in as k tokens at the same position with a 4D attention mask in
which each sees the row's (unpadded) prefix and itself only. Their keys and values are appended
to the cache once; ``commit`` moves the chosen candidate's entries into the next slot and drops
the rest, so the cache is never copied k times and the prefix is never encoded again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import Cache

from persalign.models.encoding import pad_sequences


@dataclass
class StepState:
    """What the reward model keeps between decoding steps, one row per (prompt, user)."""

    cache: Cache
    attention: torch.Tensor  # [B, L] 1 on real cached tokens
    next_position: torch.Tensor  # [B] position id of the next token
    z: torch.Tensor | None  # [B, D] user vectors
    total: torch.Tensor  # [B] running sum of response-token values
    count: torch.Tensor  # [B] response tokens so far
    pending: torch.Tensor | None = None  # [B, k] values of the last candidates
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific state

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (e.g. drop finished sequences)."""
        self.cache.batch_select_indices(rows)
        self.attention = self.attention[rows]
        self.next_position = self.next_position[rows]
        self.z = None if self.z is None else self.z[rows]
        self.total, self.count = self.total[rows], self.count[rows]
        self.pending = None if self.pending is None else self.pending[rows]
        self.extra = {
            k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in self.extra.items()
        }


def candidate_mask(attention: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask [B, 1, k, L + k]: candidate j sees the real prefix and itself."""
    batch, length = attention.shape
    blocked = torch.finfo(dtype).min
    prefix = torch.where(attention.bool(), 0.0, blocked).to(dtype)  # [B, L]
    mask = torch.full((batch, 1, k, length + k), blocked, dtype=dtype, device=attention.device)
    mask[:, 0, :, :length] = prefix[:, None, :]
    eye = torch.arange(k, device=attention.device)
    mask[:, 0, eye, length + eye] = 0.0
    return mask


# (input_ids [B, T], mask [B, T] or [B, 1, T, L + T], positions [B, T], cache) ->
# (hidden [B, T, H], cache): the backbone's ``decode_hidden``, or a policy's (fused ARGS)
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Cache], tuple[torch.Tensor, Any]]


@torch.no_grad()
def prefill(
    rm, prompt_ids: Sequence[Sequence[int]], users: Sequence[str], forward: Forward, cache: Cache
) -> tuple[StepState, torch.Tensor]:
    """The state after the left-padded prompts went through ``forward`` into ``cache``, and
    the hidden states [B, H] of each prompt's last token."""
    pad_id = rm.formatter.tokenizer.pad_token_id
    batch = pad_sequences([list(p) for p in prompt_ids], [[] for _ in prompt_ids], pad_id, "left")
    batch = batch.to(rm.backbone.device)
    hidden, _ = forward(batch.input_ids, batch.attention_mask, batch.position_ids, cache)
    rows = len(prompt_ids)
    device = rm.backbone.device
    state = StepState(
        cache=cache,
        attention=batch.attention_mask,
        next_position=batch.attention_mask.sum(dim=1),
        z=rm.user_vectors(users),
        total=torch.zeros(rows, device=device),
        count=torch.zeros(rows, device=device),
    )
    return state, hidden[:, -1]


def start_hidden(rm, prompt_ids: Sequence[Sequence[int]], users: Sequence[str]) -> StepState:
    """Run the prompts (left-padded) through the backbone and keep the cache."""
    cache = rm.backbone.new_cache()
    return prefill(rm, prompt_ids, users, rm.backbone.decode_hidden, cache)[0]


@torch.no_grad()
def score_candidates(
    rm, state: StepState, candidates: torch.Tensor, forward: Forward
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, k] prefix rewards of the k extensions and their hidden states [B, k, H], from one
    ``forward`` of k tokens per row (tree mask); the candidates' K/V wait in the cache."""
    if state.pending is not None:
        raise RuntimeError("step_rewards called twice without commit")
    batch, k = candidates.shape
    mask = candidate_mask(state.attention, k, rm.backbone.dtype)  # [B, 1, k, L + k]
    positions = state.next_position[:, None].expand(batch, k)  # [B, k]
    hidden, _ = forward(candidates, mask, positions, state.cache)  # [B, k, H]
    z = None if state.z is None else state.z[:, None, :].expand(batch, k, -1).reshape(batch * k, -1)
    values = rm.head_values(hidden.float().reshape(batch * k, 1, -1), z).reshape(batch, k)
    state.pending = values
    if rm.aggregation == "last":
        return values, hidden
    total = state.total[:, None] + values  # [B, k]
    if rm.aggregation == "sum":
        return total, hidden
    return total / (state.count[:, None] + 1), hidden


def step_hidden(rm, state: StepState, candidates: torch.Tensor) -> torch.Tensor:
    """[B, k] prefix rewards of the k extensions; the candidates' K/V wait in the cache."""
    return score_candidates(rm, state, candidates, rm.backbone.decode_hidden)[0]


@torch.no_grad()
def commit_hidden(rm, state: StepState, choice: torch.Tensor) -> None:
    """Keep candidate ``choice`` [B] of the last step: its K/V move to slot L, the rest go."""
    if state.pending is None:
        raise RuntimeError("commit called before step_rewards")
    length = state.attention.shape[1]
    rows = torch.arange(len(choice), device=choice.device)
    for layer in state.cache.layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name)  # [B, heads, L + k, d]
            tensor[:, :, length] = tensor[rows, :, length + choice]
            setattr(layer, name, tensor[:, :, : length + 1])
    state.attention = torch.cat([state.attention, state.attention.new_ones(len(choice), 1)], 1)
    state.next_position = state.next_position + 1
    state.total = state.total + state.pending[rows, choice]
    state.count = state.count + 1
    state.pending = None
