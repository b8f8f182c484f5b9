"""Joining and trimming the decoding states of live batches: continuous batching's tensor ops.

    join_states(running.policy, fresh.policy)     # rows of ``fresh`` appended to ``running``
    join_states(running.reward, fresh.reward)     # the reward model's cached prefixes too
    compact(running.policy)                       # drop columns no live row attends to
    join_states(running.policy, fresh.policy)     # fused ARGS: FusedState (one cache) too

A state's rows are left-padded: every row's real tokens end at the last column, the mask
(``attention`` [B, L], 1 on real tokens) hides the padding, and each row carries its own
``next_position``. Joining a batch of length L1 with one of length L2 left-pads the shorter
one's keys, values and mask with zeros to max(L1, L2), which is what ``decode`` does to
prompts of different lengths: masked columns get exactly zero attention weight and positions
are explicit, so a row's logits do not depend on which other rows share its batch (up to float
summation order). ``compact`` removes leading columns masked in every row (after rows retire).

Only states whose layout is known are joined: the policy's ``PolicyState``, the reward
models' ``StepState`` (no pending candidates, no method-specific extras) over full-attention
``DynamicLayer`` caches, and fused ARGS's ``FusedState`` (such a ``StepState`` over the policy's
one cache, plus the policy's next-token logits). Anything else (e.g. the likelihood methods'
two-stream state) is reported by :func:`joinable` as False; the scheduler then runs the new
rows as a batch of their own, admitted at a step boundary, which is exact by construction.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.nn import functional
from transformers.cache_utils import Cache, DynamicLayer

from persalign.decoding.fused_args import FusedState
from persalign.decoding.policy import PolicyState
from persalign.rewards.engine.stepping import StepState

_POLICY_FIELDS = {"cache", "attention", "next_position", "logits"}
_STEP_FIELDS = {"cache", "attention", "next_position", "z", "total", "count", "pending", "extra"}
_FUSED_FIELDS = {"reward", "logits"}


def _plain_cache(cache: Cache) -> bool:
    return all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def joinable(state: Any) -> bool:
    """Whether ``state`` can take rows of another state of its kind mid-flight, exactly."""
    names = {f.name for f in dataclasses.fields(state)} if dataclasses.is_dataclass(state) else {}
    if type(state) is PolicyState:
        return names == _POLICY_FIELDS and _plain_cache(state.cache)
    if type(state) is FusedState:
        return names == _FUSED_FIELDS and joinable(state.reward)
    if type(state) is StepState:
        return (
            names == _STEP_FIELDS
            and state.pending is None
            and not state.extra
            and _plain_cache(state.cache)
        )
    return False


def pad_left(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """``tensor`` with zeros prepended along ``dim`` up to ``length``."""
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    pads = [0, 0] * (tensor.dim() - 1 - dim) + [missing, 0]  # F.pad lists the last dim first
    return functional.pad(tensor, pads)


def join_caches(a: Cache, b: Cache) -> None:
    """Append the rows of cache ``b`` to cache ``a`` (keys/values [B, heads, L, d])."""
    for left, right in zip(a.layers, b.layers, strict=True):
        length = max(left.keys.shape[2], right.keys.shape[2])
        left.keys = torch.cat([pad_left(left.keys, length, 2), pad_left(right.keys, length, 2)])
        left.values = torch.cat(
            [pad_left(left.values, length, 2), pad_left(right.values, length, 2)]
        )


def _cat_optional(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None and b is None:
        return None
    if a is None or b is None:
        raise ValueError("cannot join a state with user vectors and one without")
    return torch.cat([a, b])


def join_states(a: Any, b: Any) -> None:
    """Append the rows of ``b`` to ``a`` (both PolicyState, StepState or FusedState, joinable)."""
    if type(a) is not type(b) or not (joinable(a) and joinable(b)):
        raise TypeError(f"cannot join {type(a).__name__} with {type(b).__name__}")
    if type(a) is FusedState:
        join_states(a.reward, b.reward)
        a.logits = torch.cat([a.logits, b.logits])  # [B1 + B2, V]
        return
    length = max(a.attention.shape[1], b.attention.shape[1])
    join_caches(a.cache, b.cache)
    a.attention = torch.cat([pad_left(a.attention, length, 1), pad_left(b.attention, length, 1)])
    a.next_position = torch.cat([a.next_position, b.next_position])
    if type(a) is PolicyState:
        a.logits = torch.cat([a.logits, b.logits])
        return
    a.z = _cat_optional(a.z, b.z)
    a.total = torch.cat([a.total, b.total])
    a.count = torch.cat([a.count, b.count])


def compact(state: Any) -> None:
    """Drop the leading columns that every row masks (exact: nobody attends to them)."""
    if type(state) is FusedState:
        state = state.reward  # the one cache
    if not joinable(state) or state.attention.shape[0] == 0:
        return
    used = state.attention.bool().any(dim=0).nonzero()  # [n, 1] columns some row attends to
    start = int(used[0, 0]) if len(used) else 0
    if start == 0:
        return
    state.attention = state.attention[:, start:]
    for layer in state.cache.layers:
        layer.keys = layer.keys[:, :, start:]
        layer.values = layer.values[:, :, start:]
