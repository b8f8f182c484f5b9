"""One prompt per pair beyond ``backward_pair_loss``: evaluation, VPL's and LoRE-Alt's steps.

- ``pair_prefix_rewards_shared`` returns what two ``prefix_rewards`` calls return (fp32, rel <=
  1e-4; shapes, lengths and input order exactly), in any chunking, for every method that can
  share the prompt; it falls back (exactly the two calls) for P-DPO, ``shared_prompt`` off and
  a method that overrides its scoring;
- ``rm_accuracy`` and ``accuracies`` agree with the two-sequence path, for adapted users too,
  and an unknown user is the same ConfigError;
- VPL's and LoRE-Alt's training steps: loss and every gradient equal with ``shared_prompt`` on
  and off (same seed);
- the shared paths really run 4D-mask rows with fewer tokens (no silent fallback).
"""

from __future__ import annotations

import pytest
import torch

from persalign.errors import ConfigError
from persalign.metrics.prefix_accuracy import accuracies
from persalign.metrics.ranking import rm_accuracy
from persalign.rewards.engine.pair_eval import eval_mode, pair_prefix_rewards_shared, two_calls
from persalign.rewards.methods.global_rm import GlobalRM
from persalign.types import Preference

from .test_shared_prompt import assert_grads_close, ready, rel

SHARING = ["global-rm", "global-rm-v2", "lore", "lore-alt", "genarm", "mpu", "vpl", "pref", "pal"]


def two_sequences(rm) -> None:
    """Switch ``rm`` to the two-sequence path (the config is frozen: replace it)."""
    rm.config = rm.config.model_copy(update={"shared_prompt": False})


def count_tokens(rm, monkeypatch) -> list[tuple[int, int]]:
    """Record (input tokens, mask dims) of every backbone forward of ``rm``."""
    seen: list[tuple[int, int]] = []
    forward = rm.backbone.hidden

    def counting(input_ids, attention_mask, *args, **kw):
        seen.append((input_ids.numel(), attention_mask.dim()))
        return forward(input_ids, attention_mask, *args, **kw)

    monkeypatch.setattr(rm.backbone, "hidden", counting)
    return seen


def assert_prefix_equal(got, ref, tol: float = 1e-4) -> None:
    assert got.rewards.shape == ref.rewards.shape and got.rewards.dtype == torch.float32
    assert torch.equal(got.lengths, ref.lengths)
    assert rel(got.rewards, ref.rewards) <= tol
    beyond = torch.arange(got.rewards.shape[1])[None, :] >= got.lengths[:, None]
    assert not got.rewards[beyond].any()  # 0 beyond each response, as prefix_rewards


@pytest.mark.parametrize("method", SHARING)
def test_shared_eval_prefix_rewards_equal_two_calls(method, tiny_lm):
    rm, pairs = ready(method, tiny_lm)
    rm.train()  # prefix_rewards scores in eval mode and restores the mode; so must this
    assert eval_mode(rm) == ("logprobs" if method == "genarm" else "hidden")
    for size in (3, None):  # chunks of 3 pairs (longest first, put back in order) or default
        chosen, rejected = pair_prefix_rewards_shared(rm, pairs, batch_size=size)
        ref_chosen, ref_rejected = two_calls(rm, pairs, size)
        assert_prefix_equal(chosen, ref_chosen)
        assert_prefix_equal(rejected, ref_rejected)
    assert rm.training
    margin, ref_margin = chosen.last() - rejected.last(), ref_chosen.last() - ref_rejected.last()
    assert (margin - ref_margin).abs().max() < 0.1 * margin.abs().min()  # signs not from noise
    shared_acc = rm_accuracy(rm, pairs), accuracies(rm, pairs)
    two_sequences(rm)
    assert eval_mode(rm) is None
    assert shared_acc == (rm_accuracy(rm, pairs), accuracies(rm, pairs))


def test_shared_eval_adapted_and_unknown_users(tiny_lm):
    rm, pairs = ready("lore", tiny_lm)
    rm.add_user("newbie", torch.tensor([0.7, -0.4]))
    mixed = [
        Preference(p.id, "newbie" if i % 2 else p.user, p.prompt, p.chosen, p.rejected)
        for i, p in enumerate(pairs)
    ]
    got, ref = pair_prefix_rewards_shared(rm, mixed, 2), two_calls(rm, mixed, 2)
    for side in range(2):
        assert_prefix_equal(got[side], ref[side])
    ghost = [*mixed[:-1], Preference("g", "ghost", "Say", "cat alpha", "cat omega")]
    with pytest.raises(ConfigError, match=r"unknown user.*ghost"):
        rm_accuracy(rm, ghost)
    two_sequences(rm)
    with pytest.raises(ConfigError, match=r"unknown user.*ghost"):
        rm_accuracy(rm, ghost)


class Doubled(GlobalRM):
    """A test-only method whose scoring is not head_values of hidden states: must fall back."""

    def batch_prefix_rewards(self, batch, users):
        return 2 * super().batch_prefix_rewards(batch, users)


@pytest.mark.parametrize("method", ["p-dpo", "doubled", "off"])
def test_shared_eval_falls_back_to_the_two_calls(method, tiny_lm):
    if method == "doubled":
        rm, pairs = ready("global-rm", tiny_lm, cls=Doubled)
    else:
        rm, pairs = ready("lore" if method == "off" else method, tiny_lm)
    if method == "off":
        two_sequences(rm)
    assert eval_mode(rm) is None
    got, ref = pair_prefix_rewards_shared(rm, pairs, 4), two_calls(rm, pairs, 4)
    for side in range(2):
        assert torch.equal(got[side].rewards, ref[side].rewards)
        assert torch.equal(got[side].lengths, ref[side].lengths)


@pytest.mark.parametrize("method", ["lore", "genarm"])
def test_shared_eval_encodes_fewer_tokens(method, tiny_lm, monkeypatch):
    rm, pairs = ready(method, tiny_lm)
    seen = count_tokens(rm, monkeypatch)
    rm_accuracy(rm, pairs)
    shared = list(seen)
    seen.clear()
    two_sequences(rm)
    rm_accuracy(rm, pairs)
    assert shared and all(dims == 4 for _, dims in shared)  # one shared-prompt row per pair
    assert all(dims == 2 for _, dims in seen)
    assert sum(n for n, _ in shared) < 0.8 * sum(n for n, _ in seen)


def step_grads(rm, pairs, run) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """One training step (learning rates 0: the weights stay put) from a fixed RNG state."""
    optimizers = rm.make_optimizers()
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = 0.0
    torch.manual_seed(3)
    stats = run(optimizers)
    grads = {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}
    return stats, grads


@pytest.mark.parametrize("method", ["vpl", "lore-alt"])
def test_training_step_equal_with_and_without_shared_prompt(method, tiny_lm, monkeypatch):
    rm, pairs = ready(method, tiny_lm)
    rm.train()
    if method == "vpl":
        rm.before_fit(pairs)  # context embeddings; the user table is then fixed
        generator = rm._generator.get_state()
    seen = count_tokens(rm, monkeypatch)

    def run(optimizers):
        if method == "vpl":
            rm._generator.set_state(generator)  # the same context sets both times
        return rm.training_step(pairs, optimizers, step=5)

    got_stats, got_grads = step_grads(rm, pairs, run)
    shared = [dims for _, dims in seen]
    seen.clear()
    two_sequences(rm)
    ref_stats, ref_grads = step_grads(rm, pairs, run)
    assert 4 in shared and 4 not in [dims for _, dims in seen]  # the step used shared rows
    assert set(got_stats) == set(ref_stats)
    for key, value in ref_stats.items():
        assert got_stats[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert any(n.startswith("backbone.") for n in ref_grads)  # gradients reach the LoRA weights
    assert_grads_close(got_grads, ref_grads, 1e-4)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_vpl_context_embeddings_equal_a_naive_two_sequence_encoding(pooling, tiny_lm, monkeypatch):
    """VPL's frozen support features from shared rows equal each response encoded on its own
    row after its prompt (LoRA off), pooled by hand; and they run fewer tokens."""
    rm, pairs = ready("vpl", tiny_lm)
    rm.config = rm.config.model_copy(update={"context_pooling": pooling, "eval_batch_size": 3})
    seen = count_tokens(rm, monkeypatch)
    chosen, rejected = rm.context_embeddings(pairs)  # [n, H] each
    assert seen and all(dims == 4 for _, dims in seen)
    shared_tokens = sum(n for n, _ in seen)
    with torch.no_grad(), rm.backbone.model.disable_adapter():
        for side, got in (("chosen", chosen), ("rejected", rejected)):
            for i, pair in enumerate(pairs):
                prompt = rm.formatter.prompt_ids(pair.prompt)
                response = rm.formatter.response_ids(getattr(pair, side))
                ids = torch.tensor([prompt + response])
                positions = torch.arange(ids.shape[1])[None]
                hidden, _ = rm.backbone.hidden(ids, torch.ones_like(ids), positions)  # [1, T, H]
                states = hidden[0, len(prompt) :].float()  # [R, H]
                expect = states.mean(dim=0) if pooling == "mean" else states[-1]
                assert rel(got[i], expect) <= 1e-4
    seen.clear()
    two_sequences(rm)
    rm.context_embeddings(pairs)
    assert sum(n for n, _ in seen) > shared_tokens
