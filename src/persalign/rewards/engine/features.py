"""Frozen-backbone features: the backbone's states of every training response, computed once.

    table = training_features(rm, pairs)          # cached on disk: a second run computes nothing
    chosen, rejected = table.pair_rewards(rm, batch)          # [B] each, head only, with grads
    table.pooled(batch, "mean")                   # [2B, H] VPL's context embeddings
    values = sequence_values(rm, hidden, valid, z)            # [N] also what adaptation reads

With ``backbone_training="frozen"`` the backbone has no adapters and never changes, so each
(prompt, response)'s hidden states are a constant of the data. ``fit`` builds a
:class:`FeatureTable` of its pairs before the first step and the pair rewards of every step read
it (``pair_rewards``' routing); the head, user parameters and each method's own step (LoRE-Alt's
alternation, VPL's sampled latents, PReF's warm start) are unchanged.

What a training loss reads, and so what is stored per response (float32, H wide):

- ``last``: the state at the response's last token, for every method whose sequence reward is
  its last prefix reward (``aggregation`` "last": Global RM, LoRE, LoRE-Alt, PReF, PAL, VPL,
  MPU, MPU-Avg), and PReF's warm-start embeddings;
- ``mean``: the mean over the response tokens (VPL's context embeddings, ``context_pooling``);
- ``token``: the state at every response token, for a reward that pools per-token head values
  (Global RM-v2's mean of a non-linear head: no pooled state gives it).

All three come from the same forward pass and are always stored together, so every method and
seed reuses one pass. The pass groups the missing responses by prompt, two per shared-prompt
row (``pair_batching.collate_shared``; ``pair_rewards.items_hidden``), longest rows first in
length buckets under ``max_tokens_per_microbatch``. On disk they are
``embedding_cache.EmbeddingCache`` shards under ``cache_dir()/reward-features/``, one store per
(backbone weights hash, kind, token limits, chat template, shared prompt), rows keyed by the
sha256 of the response's token ids after its prompt's (``response_key``; a per-token row adds the
position), so a changed tokenizer, template or limit never reads a stale row.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from persalign.errors import DataError
from persalign.logs import track
from persalign.models.cache import cache_dir
from persalign.models.embedding_cache import EmbeddingCache
from persalign.rewards.engine.aggregation import aggregate
from persalign.rewards.engine.pair_batching import PairTokens, shared_cost
from persalign.rewards.engine.pair_rewards import items_hidden, shared_prompt_mode
from persalign.types import Preference

if TYPE_CHECKING:  # annotations only: RewardModel calls into this module
    from persalign.rewards.base import RewardModel

log = logging.getLogger(__name__)
KINDS = ("last", "mean", "token")
PASS_CHUNK = 32  # shared-prompt rows per items_hidden call (bounds the [2n, R, H] buffer)
Text = tuple[str, str]  # (prompt, response)


def pool_states(hidden: torch.Tensor, valid: torch.Tensor, how: str) -> torch.Tensor:
    """Response states [B, R, H] with validity [B, R] -> [B, H]: the state at the last response
    token, or the mean over the response tokens."""
    lengths = valid.sum(dim=1)  # [B]
    if how == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
    return (hidden * valid[..., None]).sum(dim=1) / lengths[:, None]


def sequence_values(
    rm: RewardModel, hidden: torch.Tensor, valid: torch.Tensor, z: torch.Tensor | None
) -> torch.Tensor:
    """Sequence rewards [N] from response states [N, R, H] (validity [N, R], user vectors
    [N, D] or None): the head at every position, aggregated, read at each response's end."""
    prefix = aggregate(rm.head_values(hidden, z), valid, rm.aggregation)  # [N, R]
    return prefix[torch.arange(len(prefix), device=prefix.device), valid.sum(dim=1) - 1]


def response_key(prompt_ids: Sequence[int], response_ids: Sequence[int]) -> bytes:
    """The 32-byte row key of a response after its prompt: sha256 of both token-id lists."""
    text = ",".join(map(str, prompt_ids)) + "|" + ",".join(map(str, response_ids))
    return hashlib.sha256(text.encode("ascii")).digest()


def token_key(key: bytes, position: int) -> bytes:
    """The row key of one response token's state."""
    return hashlib.sha256(key + position.to_bytes(4, "little")).digest()


def feature_stores(rm: RewardModel) -> dict[str, EmbeddingCache]:
    """The on-disk stores of ``rm``'s backbone features, one per kind."""
    cfg = rm.config
    layout = "shared" if shared_prompt_mode(rm) == "hidden" else "two"
    base = (
        f"{rm.backbone.weights_hash()}|prompt{cfg.max_prompt_tokens}"
        f"|response{cfg.max_response_tokens}|template{int(cfg.use_chat_template)}|{layout}"
    )
    root = cache_dir() / "reward-features"
    return {k: EmbeddingCache(f"{base}|{k}", rm.backbone.hidden_size, root) for k in KINDS}


@dataclass
class FeatureTable:
    """Frozen features of a set of responses; rows looked up by (prompt, response) text."""

    rows: dict[Text, int]
    last: torch.Tensor  # [N, H] float32, CPU
    mean: torch.Tensor  # [N, H]
    tokens: torch.Tensor  # [sum of lengths, H] every response token, row after row
    offsets: torch.Tensor  # [N + 1] long: response i's tokens are tokens[offsets[i]:offsets[i+1]]
    computed: int = 0  # responses whose features this call computed (0: all read from disk)
    seconds: float = 0.0  # wall time of building the table

    def covers(self, pairs: Sequence[Preference]) -> bool:
        return all((p.prompt, r) in self.rows for p in pairs for r in (p.chosen, p.rejected))

    def rows_of(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.rows[t] for t in zip(prompts, responses, strict=True)])

    def pair_rows(self, pairs: Sequence[Preference]) -> torch.Tensor:
        """[2B] rows of the chosen then the rejected responses."""
        prompts = [p.prompt for p in pairs] * 2
        return self.rows_of(prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])

    def pooled_texts(self, prompts: Sequence[str], responses: Sequence[str], how: str):
        """[N, H] the ``last`` or ``mean`` state of each response."""
        return (self.last if how == "last" else self.mean)[self.rows_of(prompts, responses)]

    def pooled(self, pairs: Sequence[Preference], how: str) -> torch.Tensor:
        """[2B, H] the ``last`` or ``mean`` state of the chosen then the rejected responses."""
        return (self.last if how == "last" else self.mean)[self.pair_rows(pairs)]

    def token_batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token states [N, R, H] (zero-padded) and validity [N, R] of ``rows``."""
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        steps = torch.arange(int(lengths.max()))
        valid = steps[None, :] < lengths[:, None]  # [N, R]
        index = torch.where(valid, starts[:, None] + steps[None, :], 0)
        return self.tokens[index] * valid[..., None], valid

    def pair_rewards(
        self, rm: RewardModel, pairs: Sequence[Preference], z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence rewards [B] of the chosen and rejected responses from the stored features
        (gradients to the head and z only); ``z`` [B, D] replaces ``rm.user_vectors``."""
        device = rm.user_table.device
        z = rm.user_vectors([p.user for p in pairs]) if z is None else z
        both = None if z is None else torch.cat([z, z])  # [2B, D]
        rows = self.pair_rows(pairs)
        if rm.aggregation == "last":  # the loss reads the last token only
            hidden = self.last[rows][:, None, :]  # [2B, 1, H]
            valid = torch.ones(len(rows), 1, dtype=torch.bool)
        else:
            hidden, valid = self.token_batch(rows)  # [2B, R, H], [2B, R]
        values = sequence_values(rm, hidden.to(device), valid.to(device), both)  # [2B]
        return values[: len(pairs)], values[len(pairs) :]


def training_features(
    rm: RewardModel, pairs: Sequence[Preference], *, progress: bool = True
) -> FeatureTable:
    """The features of every response of ``pairs``: read from the cache, the rest computed in
    one pass (and stored)."""
    started = time.perf_counter()
    texts = list(dict.fromkeys((p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)))
    prompt_ids = {p: rm.formatter.prompt_ids(p) for p in dict.fromkeys(t[0] for t in texts)}
    ids = [(prompt_ids[p], rm.formatter.response_ids(r)) for p, r in texts]
    for (prompt, _), (_, response) in zip(texts, ids, strict=True):
        if not response:
            raise DataError(f"a response to {prompt[:40]!r} has no tokens")
    keys = [response_key(p, r) for p, r in ids]
    stores = feature_stores(rm)
    loaded = {kind: store.load() for kind, store in stores.items()}  # kind -> (index, rows)
    found = {kind: index for kind, (index, _) in loaded.items()}
    todo = [
        i
        for i, key in enumerate(keys)
        if key not in found["last"]
        or key not in found["mean"]
        or any(token_key(key, t) not in found["token"] for t in range(len(ids[i][1])))
    ]
    fresh = compute_features(rm, [ids[i] for i in todo], progress) if todo else []
    if fresh:
        _store(stores, [keys[i] for i in todo], fresh)
    new = dict(zip(todo, fresh, strict=True))
    last, mean, tokens = [], [], []
    for i, key in enumerate(keys):
        if i in new:
            row = new[i]
        else:
            row = (
                loaded["last"][1][found["last"][key]],
                loaded["mean"][1][found["mean"][key]],
                loaded["token"][1][
                    [found["token"][token_key(key, t)] for t in range(len(ids[i][1]))]
                ],
            )
        last.append(torch.as_tensor(row[0]))
        mean.append(torch.as_tensor(row[1]))
        tokens.append(torch.as_tensor(row[2]))
    lengths = torch.tensor([len(t) for t in tokens])
    table = FeatureTable(
        rows={t: i for i, t in enumerate(texts)},
        last=torch.stack(last).float(),
        mean=torch.stack(mean).float(),
        tokens=torch.cat(tokens).float(),
        offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
        computed=len(todo),
        seconds=time.perf_counter() - started,
    )
    log.info(
        "frozen features of %d responses: %d computed, %d cached (%.1f s)",
        len(texts),
        len(todo),
        len(texts) - len(todo),
        table.seconds,
    )
    return table


@torch.inference_mode()
def compute_features(
    rm: RewardModel, todo: Sequence[tuple[list[int], list[int]]], progress: bool
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(last [H], mean [H], tokens [L, H]) of each (prompt ids, response ids): responses of
    one prompt two to a shared-prompt row, longest rows first."""
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (prompt, _) in enumerate(todo):
        by_prompt.setdefault(tuple(prompt), []).append(i)
    items, owners = [], []
    for prompt, members in by_prompt.items():
        for j in range(0, len(members), 2):
            a, b = members[j], members[min(j + 1, len(members) - 1)]  # odd one: itself twice
            items.append(PairTokens(list(prompt), todo[a][1], todo[b][1]))
            owners.append((a, b))
    order = sorted(range(len(items)), key=lambda i: (-shared_cost(items[i]), i))
    out: list = [None] * len(todo)
    was_training = rm.training
    rm.eval()
    chunks = range(0, len(order), PASS_CHUNK)
    try:
        for start in track(chunks, "frozen backbone features", total=len(chunks), show=progress):
            part = order[start : start + PASS_CHUNK]
            hidden, valid = items_hidden(rm, [items[i] for i in part])  # [2n, R, H], [2n, R]
            hidden, valid = hidden.cpu(), valid.cpu()
            last = pool_states(hidden, valid, "last")  # [2n, H]
            mean = pool_states(hidden, valid, "mean")  # [2n, H]
            for k, i in enumerate(part):
                for row, owner in ((k, owners[i][0]), (len(part) + k, owners[i][1])):
                    length = int(valid[row].sum())
                    out[owner] = (
                        last[row].numpy(),
                        mean[row].numpy(),
                        hidden[row, :length].clone().numpy(),
                    )
    finally:
        rm.train(was_training)
    return out


def _store(stores: dict[str, EmbeddingCache], keys: Sequence[bytes], rows: Sequence) -> None:
    """Append freshly computed rows to the three stores (one shard each)."""
    stores["last"].append(list(keys), np.stack([r[0] for r in rows]))
    stores["mean"].append(list(keys), np.stack([r[1] for r in rows]))
    token_keys = [
        token_key(k, t) for k, r in zip(keys, rows, strict=True) for t in range(len(r[2]))
    ]
    stores["token"].append(token_keys, np.concatenate([r[2] for r in rows]))
