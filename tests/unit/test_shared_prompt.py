"""One prompt per pair: the shared-prompt layout against the two-sequence encoding, per method.

- every registered method either scores a pair's responses after one shared prompt with rewards
  and gradients equal (fp32, rel <= 1e-4) to a naive two-sequence reference written here, or
  declares that it cannot (P-DPO) and keeps the two sequences;
- the 4D mask: a response never sees the other one, positions continue from the prompt;
- adaptation features (``response_features``) equal the two-sequence ones;
- length buckets are deterministic, within budget, and cut padding.
"""

from __future__ import annotations

import random

import pytest
import torch

import persalign.rewards as rewards
from persalign.rewards.engine.aggregation import response_index
from persalign.rewards.engine.pair_batching import (
    PairTokens,
    collate_shared,
    length_buckets,
    shared_cost,
)
from persalign.rewards.engine.pair_rewards import pair_rewards, shared_prompt_mode
from persalign.rewards.engine.training import response_features

from .rewards_synthetic import two_group_task
from .test_rewards_contract import EXTRA, FAST

METHODS = [m for m in rewards.METHODS.names() if m != "oracle"]  # sim only: test_sim_metrics.py


def ready(method: str, tiny_lm: str, cls: type | None = None, **kw) -> tuple:
    """A model with train users and non-zero LoRA weights (so every LoRA gradient is live)."""
    train, _ = two_group_task(per_user=6, n_train=4)
    pairs = train[:3] + train[6:8] + train[-2:]
    for i, pair in enumerate(pairs):  # different prompt and response lengths in one batch
        pairs[i] = type(pair)(
            pair.id,
            pair.user,
            pair.prompt + " more" * i,
            pair.chosen + "!" * (i % 3),
            pair.rejected,
        )
    settings = {**FAST, **EXTRA.get(method, {}), **kw}
    if cls is None:
        rm = rewards.create(method, backbone=tiny_lm, **settings)
    else:  # a test-only subclass, not registered
        rm = cls(cls.config_class(backbone=tiny_lm, **settings))
    torch.manual_seed(1)
    if rm.personalized:
        users = sorted({p.user for p in train})
        rm.set_users(users, rm.init_train_users(len(users)) + 0.3 * torch.randn(len(users), 1))
        rm.user_table.requires_grad_(True)
    with torch.no_grad():
        for param in rm.backbone.trainable_parameters():
            param.normal_(0.0, 0.05)
    return rm, pairs


def two_rows(rm, pairs):
    """Each response after its own copy of the prompt: chosen rows, then rejected rows."""
    return rm.encode(
        [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]
    )


def naive_two_sequence(rm, pairs) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: each response after its own copy of the prompt, one row each."""
    batch = two_rows(rm, pairs)
    prefix = rm.batch_prefix_rewards(batch, [p.user for p in pairs] * 2)
    last = prefix[torch.arange(2 * len(pairs)), batch.response_lengths - 1]
    return last[: len(pairs)], last[len(pairs) :]


def loss_and_grads(rm, pairs, score) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    rm.zero_grad(set_to_none=True)
    chosen, rejected = score(rm, pairs)
    rm.pair_loss(chosen, rejected, pairs).backward()
    grads = {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}
    return torch.cat([chosen, rejected]).detach(), grads


def rel(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    """max |a - b| / max |b|; ``floor`` bounds the denominator below (a gradient that cancels to
    ~0 in exact arithmetic, e.g. a bias shared by chosen and rejected, is judged at that scale)."""
    return float((a - b).abs().max() / max(float(b.abs().max()), floor))


def assert_grads_close(got: dict, ref: dict, tol: float) -> None:
    """Every gradient tensor within ``tol``, relative to itself or a tenth of the largest one."""
    assert set(got) == set(ref)
    scale = max(float(g.abs().max()) for g in ref.values())
    assert scale > 0
    for name, grad in ref.items():
        assert rel(got[name], grad, 0.1 * scale) <= tol, name


@pytest.mark.parametrize("method", METHODS)
def test_shared_prompt_rewards_and_grads_equal_two_sequences(method, tiny_lm):
    rm, pairs = ready(method, tiny_lm)
    rm.train()
    if not rm.shares_prompt:  # declared: soft tokens / reference model (P-DPO)
        assert shared_prompt_mode(rm) is None
        return
    assert shared_prompt_mode(rm) in ("hidden", "logprobs")
    ref_rewards, ref_grads = loss_and_grads(rm, pairs, naive_two_sequence)
    got_rewards, got_grads = loss_and_grads(rm, pairs, pair_rewards)
    assert rel(got_rewards, ref_rewards) <= 1e-4
    live = [n for n, g in ref_grads.items() if g.abs().max() > 0]
    assert any(n.startswith("backbone.") for n in live)  # gradients reach the LoRA weights
    assert_grads_close(got_grads, ref_grads, 1e-4)


def test_shared_mask_and_positions():
    item = PairTokens(prompt=[5, 6, 7], chosen=[8, 9], rejected=[10, 11, 12])
    batch = collate_shared([item, PairTokens([5], [8], [10])], pad_id=0)
    seen = batch.attention_mask[0, 0] == 0  # [T, T]
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 4, 3, 4, 5]
    for q in range(8):
        expect = [k <= q and not (q >= 5 and k in (3, 4)) for k in range(8)]
        assert seen[q].tolist() == expect, q
    pad = batch.attention_mask[1, 0] == 0
    assert pad[4].tolist() == [k == 4 for k in range(8)]  # a pad row attends to itself only
    index, valid = batch.response_index("rejected")
    assert index[0].tolist() == [5, 6, 7] and valid[1].tolist() == [True, False, False]
    assert batch.predictor_index("rejected")[0].tolist() == [2, 5, 6]  # first: prompt's last


@pytest.mark.parametrize("method", ["lore", "pal"])
def test_adaptation_features_equal_two_sequences(method, tiny_lm):
    rm, pairs = ready(method, tiny_lm)
    rm.eval()
    got = response_features(rm, pairs)
    batch = two_rows(rm, pairs)
    with torch.no_grad():
        hidden, _ = rm.backbone.hidden(batch.input_ids, batch.attention_mask, batch.position_ids)
    index, valid = response_index(batch)
    expect = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
    assert torch.equal(got["valid"], valid)
    assert rel(got["hidden"][valid], expect[valid]) <= 1e-5


def test_length_buckets_are_deterministic_within_budget_and_cut_padding():
    rng = random.Random(0)
    costs = [rng.randint(10, 300) for _ in range(64)]
    groups = length_buckets(costs, budget=1000)
    assert groups == length_buckets(list(costs), budget=1000)
    assert sorted(i for g in groups for i in g) == list(range(64))
    assert all(len(g) * max(costs[i] for i in g) <= 1000 or len(g) == 1 for g in groups)
    padded = sum(len(g) * max(costs[i] for i in g) for g in groups)
    naive = sum(
        len(g) * max(costs[i] for i in g) for g in [list(range(s, s + 4)) for s in range(0, 64, 4)]
    )
    assert padded - sum(costs) < (naive - sum(costs)) / 2
    assert length_buckets(costs, None) == [sorted(range(64), key=lambda i: (-costs[i], i))]
    assert shared_cost(PairTokens([1, 2], [3], [4, 5])) == 5
