"""Remembered frozen-backbone states (rewards/engine/frozen_states.py): evaluation of a frozen
reward model runs the backbone once per text per process, and its rewards equal the live
backbone's (the cache off) within float rounding, for every scoring path that reads them."""

from __future__ import annotations

import pytest
import torch

import persalign.rewards as rewards
from persalign.metrics.candidate_scoring import candidate_reward_sums
from persalign.metrics.scoring import reward_sums
from persalign.rewards.engine import frozen_states
from persalign.rewards.engine.frozen_states import StateLRU, remembers
from persalign.rewards.engine.pair_eval import pair_prefix_rewards_shared, two_calls

from .rewards_synthetic import two_group_task
from .test_rewards_contract import EXTRA, FAST

PROMPTS = ["Summarize: the cat sat on the mat.", "Title: a study of small models", "Q: why?"]
RESPONSES = ["A cat sat.", "Small models, studied at length", "Because it rains"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def frozen_model(method: str, tiny_lm: str):
    train, _ = two_group_task(per_user=4, n_train=4)
    settings = {**FAST, **EXTRA.get(method, {}), "max_steps": 2, "batch_size": 4}
    rm = rewards.create(method, backbone=tiny_lm, backbone_training="frozen", **settings)
    rm.fit(train)
    return rm, sorted({p.user for p in train})


@pytest.fixture
def fresh_states(monkeypatch) -> StateLRU:
    states = StateLRU(max_bytes=64 * 1024 * 1024)
    monkeypatch.setattr(frozen_states, "STATES", states)
    return states


def live(rm, fn, monkeypatch):
    """``fn()`` with remembering off: the plain backbone path, the reference."""
    with monkeypatch.context() as m:
        m.setattr(frozen_states, "STATES", StateLRU(max_bytes=0))
        assert not remembers(rm)
        return fn()


@pytest.mark.parametrize("method", ["global-rm-v2", "lore", "mpu", "vpl"])
def test_remembered_prefix_rewards_equal_the_live_backbones(
    method, tiny_lm, fresh_states, monkeypatch
):
    rm, users = frozen_model(method, tiny_lm)
    assert remembers(rm)
    who = [users[i % len(users)] for i in range(len(PROMPTS))]
    want = live(rm, lambda: rm.prefix_rewards(PROMPTS, RESPONSES, who, batch_size=2), monkeypatch)
    got = rm.prefix_rewards(PROMPTS, RESPONSES, who, batch_size=2)
    assert torch.equal(got.lengths, want.lengths)
    assert rel(got.rewards, want.rewards) <= 1e-5
    assert fresh_states.computed == len(PROMPTS) and fresh_states.hits == 0

    again = rm.prefix_rewards(PROMPTS[::-1], RESPONSES[::-1], who[::-1], batch_size=3)
    assert fresh_states.computed == len(PROMPTS)  # nothing run through the backbone again
    assert fresh_states.hits == len(PROMPTS)
    assert rel(again.rewards.flip(0)[:, : got.rewards.shape[1]], got.rewards) <= 1e-6


def test_the_states_serve_every_method_on_one_backbone(tiny_lm, fresh_states):
    lore, users = frozen_model("lore", tiny_lm)
    mpu, _ = frozen_model("mpu", tiny_lm)
    who = [users[0]] * len(PROMPTS)
    lore.sequence_rewards(PROMPTS, RESPONSES, who)
    computed = fresh_states.computed
    mpu.sequence_rewards(PROMPTS, RESPONSES, who)
    assert fresh_states.computed == computed  # the same frozen backbone: read, not run


def test_personalized_rewards_differ_per_user_from_the_same_states(tiny_lm, fresh_states):
    rm, users = frozen_model("lore", tiny_lm)
    first = rm.sequence_rewards(PROMPTS, RESPONSES, [users[0]] * 3)
    second = rm.sequence_rewards(PROMPTS, RESPONSES, [users[1]] * 3)
    assert fresh_states.computed == len(PROMPTS)
    assert not torch.allclose(first, second)


def test_pair_and_candidate_paths_equal_the_live_reference(tiny_lm, fresh_states, monkeypatch):
    rm, users = frozen_model("lore", tiny_lm)
    train, _ = two_group_task(per_user=4, n_train=4)
    pairs = train[:5]
    want = live(rm, lambda: two_calls(rm, pairs, None), monkeypatch)
    got = pair_prefix_rewards_shared(rm, pairs)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a.lengths, b.lengths) and rel(a.rewards, b.rewards) <= 1e-5

    groups = [RESPONSES, RESPONSES[:2]]
    prompts, who = PROMPTS[:2], users[:2]
    flat = [(p, r, u) for p, g, u in zip(prompts, groups, who, strict=True) for r in g]
    naive = live(
        rm,
        lambda: reward_sums(rm, *map(list, zip(*flat, strict=True)), progress=False),
        monkeypatch,
    )
    shared = candidate_reward_sums(rm, prompts, groups, who, batch_size=2)
    assert rel(shared, naive) <= 1e-5


def test_a_lora_backbone_is_not_remembered(tiny_lm, fresh_states):
    rm = rewards.create("global-rm", backbone=tiny_lm, **FAST)
    assert not remembers(rm)
    rm.sequence_rewards(PROMPTS, RESPONSES, [""] * 3)
    assert fresh_states.computed == 0 and not fresh_states.entries


def test_the_lru_keeps_within_its_bytes():
    states = StateLRU(max_bytes=3 * 4 * 8)  # three [1, 8] float32 rows
    for i in range(5):
        states.put(("m", bytes([i])), torch.zeros(1, 8))
    assert len(states.entries) == 3 and states.bytes == 96
    assert states.get(("m", bytes([0]))) is None and states.get(("m", bytes([4]))) is not None


@pytest.mark.parametrize("method", ["lore", "pal", "vpl"])
def test_adaptation_reads_the_remembered_states(method, tiny_lm, fresh_states, monkeypatch):
    rm, _ = frozen_model(method, tiny_lm)
    _, new = two_group_task(per_user=4, n_train=4, support=3)
    support, _ = new["new0"]
    live(rm, lambda: rm.adapt("live", support), monkeypatch)
    rm.adapt("remembered", support)
    computed = fresh_states.computed
    assert computed == len({(p.prompt, r) for p in support for r in (p.chosen, p.rejected)})
    rm.adapt("again", support)
    assert fresh_states.computed == computed  # a second method or seed: no backbone pass
    want, got = rm.user_vectors(["live"]), rm.user_vectors(["remembered"])
    assert rel(got, want) <= 1e-4 and torch.equal(got, rm.user_vectors(["again"]))
    assert not torch.allclose(got[0], rm.new_user_vector())  # adaptation moved it
