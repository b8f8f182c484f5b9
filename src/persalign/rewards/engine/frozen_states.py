"""Remembered response states of a frozen backbone: evaluation runs it once per text.

    if remembers(rm):                            # frozen backbone, hidden-state reward
        rewards, lengths = remembered_prefix_rewards(rm, prompts, responses, users)  # [N, R], [N]
    STATES.computed, STATES.hits, STATES.bytes   # what this process computed and reused
    STATES.clear()

With ``backbone_training="frozen"`` a reward model's backbone has no adapters and never
changes, so the hidden states of a response after its prompt are a constant of the two token
lists, the same for every method, seed and cell that uses that backbone. Evaluation (RM
accuracy, policy accuracy's reward sums, the ground-truth rank's candidates, the win rate,
steering and true RM accuracy) scores the same query pairs, candidates, zero-shot outputs and
users' texts in cell after cell; here each is run through the backbone once per process and
only the head (with each method's users) is applied again.

``STATES`` is a process-wide LRU of the per-token states of each response ([L, H] float32,
CPU), keyed by the backbone's weights hash, its token limits and chat template, and the
sha256 of the prompt's and response's token ids (``features.response_key``), so a changed
model, tokenizer, template or limit never reads a stale row. It is bounded by
``$PERSALIGN_STATE_CACHE_MIB`` (default 1024; 0 turns remembering off); under Ray it lives as
long as the worker. Missing states are computed as frozen training computes its features
(``features.compute_features``: a prompt's responses two to a shared-prompt row, longest rows
first), so a remembered reward equals one computed on rows of its own up to float rounding
(tests/unit/test_frozen_states.py checks 1e-5).

Only a reward whose scoring is the base one qualifies (``pair_eval_mode`` "hidden": the head at
each response position of the backbone's states): GenARM's likelihood, P-DPO's soft tokens, the
oracle and any LoRA backbone are scored as before.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from persalign.rewards.engine.aggregation import aggregate
from persalign.rewards.engine.features import compute_features, response_key
from persalign.rewards.engine.pair_rewards import declared_eval_mode

if TYPE_CHECKING:  # annotations only: RewardModel calls into this module
    from persalign.rewards.base import RewardModel

log = logging.getLogger(__name__)
MIB = 1024 * 1024
DEFAULT_STATE_CACHE_MIB = 1024


class StateLRU:
    """Per-token response states [L, H] by key, least recently used evicted beyond
    ``max_bytes`` (``$PERSALIGN_STATE_CACHE_MIB``)."""

    def __init__(self, max_bytes: int | None = None):
        if max_bytes is None:
            mib = float(os.environ.get("PERSALIGN_STATE_CACHE_MIB", DEFAULT_STATE_CACHE_MIB))
            max_bytes = int(mib * MIB)
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[str, bytes], torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = self.computed = 0

    def get(self, key: tuple[str, bytes]) -> torch.Tensor | None:
        states = self.entries.get(key)
        if states is not None:
            self.entries.move_to_end(key)
        return states

    def put(self, key: tuple[str, bytes], states: torch.Tensor) -> None:
        if key in self.entries:
            return
        self.entries[key] = states
        self.bytes += states.numel() * states.element_size()
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = self.hits = self.computed = 0


STATES = StateLRU()


def remembers(rm: RewardModel) -> bool:
    """Whether ``rm``'s evaluation may read remembered states: a frozen backbone (no LoRA) and
    the base hidden-state scoring (``pair_eval_mode`` "hidden"), with the cache on."""
    return (
        STATES.max_bytes > 0
        and rm.config.backbone_training == "frozen"
        and declared_eval_mode(rm) == "hidden"
    )


def _model_key(rm: RewardModel) -> str:
    cfg = rm.config
    return (
        f"{rm.backbone.weights_hash()}|prompt{cfg.max_prompt_tokens}"
        f"|response{cfg.max_response_tokens}|template{int(cfg.use_chat_template)}"
    )


def response_states(
    rm: RewardModel, prompts: Sequence[str], responses: Sequence[str]
) -> list[torch.Tensor] | None:
    """The per-token states [L_i, H] (float32, CPU) of each response after its prompt, the
    missing ones computed in one pass; None when a response has no tokens (the caller's own
    path then reports it)."""
    prompt_ids = {p: rm.formatter.prompt_ids(p) for p in dict.fromkeys(prompts)}
    ids = [
        (prompt_ids[p], rm.formatter.response_ids(r))
        for p, r in zip(prompts, responses, strict=True)
    ]
    if any(not response for _, response in ids):
        return None
    model = _model_key(rm)
    keys = [(model, response_key(p, r)) for p, r in ids]
    found = [STATES.get(key) for key in keys]
    todo = list(
        dict.fromkeys(key for key, states in zip(keys, found, strict=True) if states is None)
    )
    if todo:
        first = {key: i for i, key in reversed(list(enumerate(keys)))}  # a key's first item
        fresh = compute_features(rm, [ids[first[key]] for key in todo], progress=False)
        made = {key: torch.from_numpy(row[2]).float() for key, row in zip(todo, fresh, strict=True)}
        for key, states in made.items():
            STATES.put(key, states)
        found = [
            made[key] if states is None else states for key, states in zip(keys, found, strict=True)
        ]
        STATES.computed += len(todo)
    STATES.hits += len(keys) - len(todo)
    return found


def pad(states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-response states [L_i, H] zero-padded to [N, R, H], and validity [N, R]."""
    lengths = torch.tensor([len(s) for s in states], dtype=torch.long)
    width = int(lengths.max())
    hidden = torch.stack([nn.functional.pad(s, (0, 0, 0, width - len(s))) for s in states])
    return hidden, torch.arange(width)[None, :] < lengths[:, None]


def padded_states(
    rm: RewardModel, prompts: Sequence[str], responses: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Remembered states of each response zero-padded, [N, R, H] float32 on the backbone's
    device, and validity [N, R]; None where a response has no tokens."""
    states = response_states(rm, prompts, responses)
    if states is None:
        return None
    hidden, valid = pad(states)
    device = rm.backbone.device
    return hidden.to(device), valid.to(device)


@torch.no_grad()
def remembered_prefix_rewards(
    rm: RewardModel,
    prompts: Sequence[str],
    responses: Sequence[str],
    users: Sequence[str],
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(prefix rewards [N, R] float32, 0 beyond each response; lengths [N]) from remembered
    states, the head applied ``batch_size`` responses at a time; None where a response has no
    tokens."""
    states = response_states(rm, prompts, responses)
    if states is None:
        return None
    lengths = torch.tensor([len(s) for s in states], dtype=torch.long)
    out = torch.zeros(len(states), int(lengths.max()))
    device = rm.user_table.device
    was_training = rm.training
    rm.eval()
    try:
        for start in range(0, len(states), batch_size):
            hidden, valid = pad(states[start : start + batch_size])  # [b, R, H], [b, R]
            z = rm.user_vectors(users[start : start + len(hidden)])  # [b, D] or None
            values = rm.head_values(hidden.to(device), z)  # [b, R]
            prefix = aggregate(values, valid.to(device), rm.aggregation).float().cpu()  # [b, R]
            out[start : start + len(hidden), : valid.shape[1]] = prefix * valid
    finally:
        rm.train(was_training)
    return out, lengths
