"""The sequence memo (rewards/engine/sequence_memo.py): while a cell evaluates a reward model,
a response it has scored is not scored again, the values read back equal a fresh computation,
and training or adapting the model forgets them."""

from __future__ import annotations

import torch

import persalign.rewards as rewards
from persalign.metrics.scoring import reward_sums
from persalign.rewards.engine.sequence_memo import forget_sequences, remember_sequences

from .rewards_synthetic import two_group_task
from .test_rewards_contract import EXTRA, FAST

PROMPTS = ["Summarize: the cat sat on the mat.", "Title: a study of small models", "Q: why?"]
RESPONSES = ["A cat sat.", "Small models, studied at length", "Because it rains"]


def counted(rm, monkeypatch) -> list[int]:
    """Patch ``rm``'s batch pass to count the responses it scores."""
    scored: list[int] = []
    real = type(rm).batch_prefix_rewards

    def spy(self, batch, users):
        scored.append(int(batch.input_ids.shape[0]))
        return real(self, batch, users)

    monkeypatch.setattr(type(rm), "batch_prefix_rewards", spy)
    return scored


def genarm(tiny_lm: str):
    train, support = two_group_task(per_user=4, n_train=4)
    settings = {**FAST, **EXTRA.get("genarm", {}), "max_steps": 2, "batch_size": 4}
    rm = rewards.create("genarm", backbone=tiny_lm, **settings)
    rm.fit(train)
    return rm, sorted({p.user for p in train}), support


def test_scored_responses_are_read_back_and_equal_a_fresh_pass(tiny_lm, monkeypatch):
    rm, users, _ = genarm(tiny_lm)
    who = [users[i % len(users)] for i in range(len(PROMPTS))]
    want = rm.sequence_rewards(PROMPTS, RESPONSES, who, batch_size=2)  # memo off: the reference
    scored = counted(rm, monkeypatch)
    again = rm.sequence_rewards(PROMPTS, RESPONSES, who, batch_size=2)
    assert sum(scored) == 3 and torch.allclose(again, want, atol=1e-5)  # off: computed again

    remember_sequences(rm)
    scored.clear()
    # policy accuracy's reward pass (prefix rewards) records the first two responses
    reward_sums(rm, PROMPTS[:2], RESPONSES[:2], who[:2], batch_size=2, progress=False)
    assert sum(scored) == 2
    scored.clear()
    mixed = [PROMPTS[2], PROMPTS[0], PROMPTS[2], PROMPTS[1]]  # one new response, asked twice
    got = rm.sequence_rewards(
        mixed, [RESPONSES[i] for i in (2, 0, 2, 1)], [who[i] for i in (2, 0, 2, 1)]
    )
    assert scored == [1]  # only the unseen response, once
    assert torch.allclose(got, want[[2, 0, 2, 1]], atol=1e-5)
    scored.clear()
    other = users[1] if who[0] == users[0] else users[0]
    rm.sequence_rewards(PROMPTS[:1], RESPONSES[:1], [other])  # another user: another key
    assert scored == [1]


def test_training_and_adapting_forget_the_memo(tiny_lm, monkeypatch):
    rm, users, support = genarm(tiny_lm)
    remember_sequences(rm)
    who = [users[0]] * len(PROMPTS)
    before = rm.sequence_rewards(PROMPTS, RESPONSES, who)
    new_user, pairs = next(iter(support.items()))
    rm.adapt(new_user, pairs)  # GenARM is global (a no-op), yet adapting forgets
    scored = counted(rm, monkeypatch)
    rm.sequence_rewards(PROMPTS, RESPONSES, who)
    assert sum(scored) == 3  # forgotten: scored afresh (and no longer remembered)
    rm.sequence_rewards(PROMPTS, RESPONSES, who)
    assert sum(scored) == 6
    remember_sequences(rm)
    rm.sequence_rewards(PROMPTS, RESPONSES, who)
    rm.sequence_rewards(PROMPTS, RESPONSES, who)
    assert sum(scored) == 9
    train, _ = two_group_task(per_user=4, n_train=4)
    rm.fit(train)  # theta changes: whatever was remembered is gone
    after = rm.sequence_rewards(PROMPTS, RESPONSES, who)
    assert sum(scored) > 9 and not torch.allclose(after, before)
    forget_sequences(rm)
    assert rm._sequence_memo is None


def test_every_methods_own_fit_and_adapt_forget_the_memo():
    """RewardModel wraps every fit and adapt, a method's own included (VPL, PAL and P-DPO adapt
    without the base's; a new method need not remember to): each forgets the memo first."""
    from persalign.rewards import RewardModel
    from persalign.rewards.engine.sequence_memo import MEMO, forgetting
    from persalign.rewards.registry import METHODS

    for name in METHODS.names():
        cls = METHODS.get(name)
        for fn in ("fit", "adapt"):
            assert getattr(getattr(cls, fn), "forgets_sequences", False), (name, fn)

    calls = []

    class Bare(RewardModel):  # never built: only its fit and adapt are called
        def fit(self, prefs, **kw):
            calls.append(("fit", getattr(self, MEMO, "unset")))
            return []

        def adapt(self, user, support):
            calls.append(("adapt", getattr(self, MEMO, "unset")))

    rm = object.__new__(Bare)  # no __init__: no backbone
    remember_sequences(rm)
    rm.adapt("u", [])
    remember_sequences(rm)
    rm.fit([])
    assert calls == [("adapt", None), ("fit", None)]  # forgotten before each body ran
    assert Bare.adapt.__doc__ is None and Bare.adapt.__name__ == "adapt"
    assert forgetting(Bare.adapt) is Bare.adapt  # wrapped once, however often asked
