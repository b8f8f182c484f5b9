"""Prefix rewards of preference pairs for evaluation, with one shared prompt per pair.

    chosen, rejected = pair_prefix_rewards_shared(rm, pairs)       # PrefixRewards each
    chosen.rewards, chosen.lengths                                 # [N, R] r(x, y_<=t), [N]
    eval_mode(rm)                                                  # "hidden", "logprobs" or None

The result is what ``rm.prefix_rewards(prompts, chosen)`` and ``rm.prefix_rewards(prompts,
rejected)`` return (float32 on the CPU, 0 beyond each response, rows in input order), up to float
rounding, but each pair is one ``[prompt, chosen, rejected]`` row (``collate_shared``): the prompt
is encoded once instead of twice, and no head runs on prompt positions. Pairs go in chunks of
``batch_size`` (default ``config.eval_batch_size``), longest first, so padding stays small.

``eval_mode`` allows this only where the method declares it is the same computation
(``RewardModel.pair_eval_mode``): "hidden", the base class's scoring, i.e. ``head_values`` of the
hidden state at each response position; or "logprobs", the likelihood scoring of a
``LikelihoodRM`` without soft tokens or reference model (GenARM). A class that overrides a scoring
function without declaring the attribute again gets None, as do P-DPO, ``shared_prompt`` off and
an object that is not a RewardModel: ``pair_prefix_rewards_shared`` then makes the two calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from persalign.rewards.base import PrefixRewards, RewardModel
from persalign.rewards.engine.frozen_states import remembers
from persalign.rewards.engine.pair_batching import (
    shared_cost,
    tokenize_pairs,
)
from persalign.rewards.engine.pair_rewards import declared_eval_mode, shared_prefix_rewards
from persalign.types import Preference


def eval_mode(rm: object) -> str | None:
    """How ``pair_prefix_rewards_shared`` may score ``rm``'s pairs: "hidden", "logprobs" or None
    (two ``prefix_rewards`` calls): the method's declared ``pair_eval_mode`` when its training
    encoding (``shared_prompt_mode``) agrees with it; see the module docstring."""
    return declared_eval_mode(rm) if isinstance(rm, RewardModel) else None


def two_calls(
    rm, pairs: Sequence[Preference], batch_size: int | None
) -> tuple[PrefixRewards, PrefixRewards]:
    """The two-sequence reference: one ``prefix_rewards`` call per side."""
    prompts, users = [p.prompt for p in pairs], [p.user for p in pairs]
    kw = {} if batch_size is None else {"batch_size": batch_size}
    chosen = rm.prefix_rewards(prompts, [p.chosen for p in pairs], users, **kw)
    rejected = rm.prefix_rewards(prompts, [p.rejected for p in pairs], users, **kw)
    return chosen, rejected


@torch.no_grad()
def pair_prefix_rewards_shared(
    rm, pairs: Sequence[Preference], batch_size: int | None = None
) -> tuple[PrefixRewards, PrefixRewards]:
    """Prefix rewards of every chosen and every rejected response (``rm.prefix_rewards`` of each
    side), from one shared-prompt row per pair where ``eval_mode(rm)`` allows it."""
    pairs = list(pairs)
    mode = eval_mode(rm)
    if mode is None or not pairs or remembers(rm):  # remembered states: the head alone
        return two_calls(rm, pairs, batch_size)
    items = tokenize_pairs(rm.formatter, pairs)
    if mode == "logprobs" and any(not it.prompt for it in items):
        return two_calls(rm, pairs, batch_size)  # raises: a likelihood needs a prompt
    size = batch_size or rm.config.eval_batch_size
    order = sorted(range(len(items)), key=lambda i: (-shared_cost(items[i]), i))
    sides = {
        side: torch.zeros(len(items), max(len(getattr(it, side)) for it in items))
        for side in ("chosen", "rejected")
    }  # [N, R] each
    was_training = rm.training
    rm.eval()
    try:
        for start in range(0, len(order), size):
            group = order[start : start + size]
            chunk = [items[i] for i in group]
            part = shared_prefix_rewards(rm, chunk, [pairs[i].user for i in group], mode)
            for side, (prefix, _) in zip(sides, part, strict=True):
                sides[side][torch.tensor(group), : prefix.shape[1]] = prefix.float().cpu()
    finally:
        rm.train(was_training)
    lengths = {
        side: torch.tensor([len(getattr(it, side)) for it in items], dtype=torch.long)
        for side in sides
    }
    return (
        PrefixRewards(sides["chosen"], lengths["chosen"]),
        PrefixRewards(sides["rejected"], lengths["rejected"]),
    )
