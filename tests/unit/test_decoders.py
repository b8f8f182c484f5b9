"""Decoders are plugins: Decoder subclasses registered by name, with one shared batching loop."""

from __future__ import annotations

import pytest
import torch

import persalign.rewards as rewards
from persalign.decoding import (
    DECODERS,
    Decoder,
    DecodeSettings,
    GenerationRequest,
    Policy,
    create_decoder,
    register_decoder,
)
from persalign.decoding.base import PolicyChooser, pick
from persalign.decoding.zero_shot import ZeroShotDecoder
from persalign.errors import ConfigError

PROMPTS = ["Say about cat sun", "Hi", "Write a short line about the dog and the owl"]


def requests() -> list[GenerationRequest]:
    return [GenerationRequest(f"q{i}", f"u{i % 2}", p) for i, p in enumerate(PROMPTS)]


@pytest.fixture(scope="module")
def policy(tiny_lm: str) -> Policy:
    return Policy.load(tiny_lm, device="cpu")


def test_every_registered_decoder_is_a_decoder_plugin():
    assert {"args", "icl", "icl-rag", "p-dpo", "zero-shot"} <= set(DECODERS.names())
    for entry in DECODERS.entries():
        cls = entry.obj
        assert issubclass(cls, Decoder), entry.name
        assert cls.name == entry.name and entry.summary
        assert issubclass(cls.settings_class, DecodeSettings)
        # one batching loop for all: no decoder keeps its own copy of ``generate``
        assert cls.generate is Decoder.generate, entry.name


def test_takes_and_needs_tell_a_runner_what_a_decoder_wants():
    args, zero_shot = DECODERS.get("args"), DECODERS.get("zero-shot")
    assert args.takes("lam") and args.takes("k") and args.takes("max_new_tokens")
    assert not zero_shot.takes("lam") and not zero_shot.takes("k")
    assert DECODERS.get("icl").takes("shots") and DECODERS.get("icl-rag").takes("retrieval")
    assert DECODERS.get("icl-rag").takes("demonstrations") and not args.takes("demonstrations")
    assert args.options() == ["allow_negative_lam", "lam", "k", "allow_retokenize", "fused"]
    assert zero_shot.options() == []
    assert args.needs_reward_model and not zero_shot.needs_reward_model
    assert DECODERS.get("icl").needs_support and not args.needs_support
    assert not DECODERS.get("p-dpo").needs_policy and args.needs_policy
    assert DECODERS.get("p-dpo").reward_methods == ("p-dpo",) and args.reward_methods == ()


def test_settings_are_checked_against_the_decoder_settings(policy, tiny_lm: str):
    rm = rewards.create("global-rm", backbone=tiny_lm, device="cpu")
    with pytest.raises(ConfigError, match="invalid settings for decoder args: kk: unknown key"):
        create_decoder("args", policy, reward_model=rm, lam=1.0, kk=3)
    with pytest.raises(ConfigError, match="lam: unknown key"):
        create_decoder("zero-shot", policy, lam=1.0)
    with pytest.raises(ConfigError, match="k: Input should be greater than or equal to 1"):
        create_decoder("args", policy, reward_model=rm, k=0)
    decoder = create_decoder("args", policy, reward_model=rm, lam=0.5, k=3)
    assert (decoder.settings.lam, decoder.settings.k) == (0.5, 3)


def test_missing_inputs_are_clear_errors(policy):
    with pytest.raises(ConfigError, match="the args decoder needs a reward model"):
        create_decoder("args", policy)
    with pytest.raises(ConfigError, match="the icl-rag decoder needs the users' support sets"):
        create_decoder("icl-rag", policy)
    with pytest.raises(ConfigError, match="the zero-shot decoder needs a policy"):
        create_decoder("zero-shot", None)
    with pytest.raises(TypeError, match="IclSettings"):
        DECODERS.get("icl")(policy, settings=DecodeSettings(), support={})
    with pytest.raises(TypeError, match="must subclass Decoder"):
        register_decoder("not-a-decoder")(PolicyChooser)


def test_pick_is_argmax_or_a_seeded_sample():
    scores = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])  # [B, C]
    greedy = DecodeSettings()
    assert pick(scores, greedy, torch.Generator()).tolist() == [1, 0]
    hot = DecodeSettings(mode="sample", temperature=100.0)
    draws = [pick(scores, hot, torch.Generator().manual_seed(s)).tolist() for s in range(20)]
    assert draws[3] == pick(scores, hot, torch.Generator().manual_seed(3)).tolist()
    assert len({tuple(d) for d in draws}) > 1  # near-uniform: not always the argmax


def naive_greedy(policy: Policy, prompt: str, steps: int) -> list[int]:
    """Recompute the whole sequence at every step (no cache, no batch)."""
    ids = policy.formatter.prompt_ids(prompt)
    out: list[int] = []
    for _ in range(steps):
        with torch.no_grad():
            logits = policy.model(input_ids=torch.tensor([ids + out])).logits[0, -1]
        token = int(logits.argmax())
        if token in policy.eos_ids():
            break
        out.append(token)
    return out


@pytest.mark.parametrize("batch_size", [1, 2])
def test_zero_shot_greedy_is_the_naive_greedy_loop(policy, batch_size: int):
    decoder = create_decoder("zero-shot", policy, max_new_tokens=7, batch_size=batch_size)
    out = decoder.generate(requests(), progress=False)
    assert [g.tokens for g in out] == [naive_greedy(policy, p, 7) for p in PROMPTS]
    assert [g.id for g in out] == ["q0", "q1", "q2"]


def test_policy_start_ignores_users(policy):
    ids = [policy.formatter.prompt_ids(p) for p in PROMPTS]
    plain = policy.start(ids).logits
    torch.testing.assert_close(policy.start(ids, ["x", "y", "z"]).logits, plain)


def test_a_subclass_changes_only_its_hooks(policy):
    calls: list[str] = []

    class Recording(ZeroShotDecoder):  # not registered: the registry stays as shipped
        name = "recording"

        def prepare(self, requests):
            calls.append(f"prepare {len(requests)}")
            return requests[::-1]

        def chooser(self):
            calls.append("chooser")
            return super().chooser()

        def finish(self):
            calls.append("finish")

    out = Recording(policy, settings=DecodeSettings(max_new_tokens=2, batch_size=2)).generate(
        requests(), progress=False
    )
    assert [g.id for g in out] == ["q2", "q1", "q0"]
    assert calls == ["prepare 3", "chooser", "chooser", "finish"]
