"""The ``p-dpo`` decoder writes with the personalized policy, per user."""

from __future__ import annotations

import pytest
import torch

import persalign.rewards as rewards
from persalign.decoding import GenerationRequest, create_decoder
from persalign.errors import ConfigError


def test_pdpo_decoder_matches_generate_ids_per_user(tiny_lm: str):
    rm = rewards.create("p-dpo", backbone=tiny_lm, device="cpu", seed=0)
    offsets = torch.randn(2, rm.user_dim, generator=torch.Generator().manual_seed(0))
    rm.set_users(["a", "b"], offsets)
    requests = [GenerationRequest("q1", "a", "Say about cat"), GenerationRequest("q2", "b", "Hi")]
    decoder = create_decoder("p-dpo", None, reward_model=rm, max_new_tokens=5, batch_size=2)
    out = decoder.generate(requests, progress=False)
    expect = rm.generate_ids([rm.formatter.prompt_ids(r.prompt) for r in requests], ["a", "b"], 5)
    assert [g.tokens for g in out] == expect
    assert [g.user for g in out] == ["a", "b"] and all(len(g.tokens) <= 5 for g in out)


def test_pdpo_decoder_needs_a_pdpo_model(tiny_lm: str):
    rm = rewards.create("global-rm", backbone=tiny_lm, device="cpu")
    with pytest.raises(ConfigError, match="needs a trained p-dpo model"):
        create_decoder("p-dpo", None, reward_model=rm)
