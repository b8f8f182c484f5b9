"""Training in micro-batches under a token budget, gradient checkpointing, the memory estimate.

- micro-batches give the loss and gradients of the whole batch (fp32, rel <= 1e-5) for every
  method with the default step, and for a ``pair_loss`` that couples the pairs (where averaging
  per-micro-batch losses would be wrong); ``fit``'s first losses equal the unchunked ones;
- gradient checkpointing reruns each layer's forward in backward, during ``fit`` only, and gives
  the same gradients;
- the estimate grows with batch, lengths and model size, shrinks with checkpointing, budgets and
  the shared prompt; the warning names the option that lowers it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
import torch

import persalign.rewards as rewards
from persalign.rewards.base import RewardModel
from persalign.rewards.config import RewardConfig
from persalign.rewards.engine.memory import (
    ModelShape,
    available_memory_mib,
    estimate_training_memory,
    memory_advice,
    warn_if_short_of_memory,
)
from persalign.rewards.engine.pair_batching import tokenize_pairs
from persalign.rewards.engine.pair_rewards import (
    backward_pair_loss,
    microbatches,
    shared_prompt_mode,
)
from persalign.types import Preference

from .rewards_synthetic import two_group_task
from .test_shared_prompt import assert_grads_close, ready

# Methods with the default step, one per kind: a hidden-state head, a likelihood reward (GenARM),
# personalized heads (LoRE, PAL's mixtures).
DEFAULT_STEP = ["global-rm", "genarm", "lore", "pal"]


def grads_of(rm, pairs, **config) -> tuple[float, dict[str, torch.Tensor]]:
    rm.config = rm.config.model_copy(update=config)
    rm.zero_grad(set_to_none=True)
    _, _, loss = backward_pair_loss(rm, pairs)
    grads = {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}
    return float(loss), grads


def assert_same(a: tuple, b: tuple, tol: float = 1e-5) -> None:
    """Loss within ``tol``; gradients (sums over pairs in another order) within 10 x ``tol``."""
    assert abs(a[0] - b[0]) <= tol * abs(b[0])
    assert_grads_close(a[1], b[1], 10 * tol)


@pytest.mark.parametrize("method", DEFAULT_STEP)
def test_microbatches_give_the_whole_batch_loss_and_grads(method, tiny_lm):
    assert rewards.METHODS.get(method).training_step is RewardModel.training_step
    rm, pairs = ready(method, tiny_lm)
    rm.train()
    budget = 90
    rm.config = rm.config.model_copy(update={"max_tokens_per_microbatch": budget})
    items = tokenize_pairs(rm.formatter, pairs)
    assert len(microbatches(rm, items, shared_prompt_mode(rm))) > 2
    whole = grads_of(rm, pairs, max_tokens_per_microbatch=None)
    assert_same(grads_of(rm, pairs, max_tokens_per_microbatch=budget), whole)
    if shared_prompt_mode(rm):
        two = grads_of(rm, pairs, max_tokens_per_microbatch=budget, shared_prompt=False)
        assert_same(two, whole, tol=1e-4)


class Coupled(rewards.METHODS.get("global-rm")):
    """Bradley-Terry on margins standardised by the batch's own spread: not a per-pair mean."""

    def pair_loss(
        self, chosen: torch.Tensor, rejected: torch.Tensor, pairs: Sequence[Preference]
    ) -> torch.Tensor:
        margin = chosen - rejected
        return -torch.nn.functional.logsigmoid(margin / (margin.std() + 1e-3)).mean()


def test_microbatches_are_exact_for_a_loss_that_couples_pairs(tiny_lm):
    rm, pairs = ready("global-rm", tiny_lm, cls=Coupled)
    rm.train()
    whole = grads_of(rm, pairs, max_tokens_per_microbatch=None)
    chunked = grads_of(rm, pairs, max_tokens_per_microbatch=60)
    assert_same(chunked, whole)
    parts = []  # what averaging per-micro-batch losses would give: not the batch's loss
    for part in (pairs[:3], pairs[3:]):
        _, _, loss = backward_pair_loss(rm, part)
        parts.append(float(loss) * len(part) / len(pairs))
    assert abs(sum(parts) - whole[0]) > 1e-2 * abs(whole[0])


def test_fit_first_losses_equal_unchunked(tiny_lm):
    train, _ = two_group_task(per_user=6, n_train=4)
    losses = {}
    for budget in (None, 70):
        rm = rewards.create(
            "lore",
            backbone=tiny_lm,
            device="cpu",
            max_steps=3,
            batch_size=6,
            max_tokens_per_microbatch=budget,
            backbone_lr=1e-2,
        )
        losses[budget] = [h["loss"] for h in rm.fit(train, progress=False)]
    assert losses[None][2] != losses[None][0]  # the steps did move the model
    for a, b in zip(losses[70], losses[None], strict=True):
        assert abs(a - b) <= 1e-5 * abs(b)


def test_checkpointing_recomputes_layers_in_fit_only_with_the_same_grads(tiny_lm):
    rm, pairs = ready("global-rm", tiny_lm)
    layer = rm.backbone.decoder.layers[0].self_attn  # inside the checkpointed forward
    calls = []
    layer.register_forward_hook(lambda *_: calls.append(1))
    runs = {}
    for on in (False, True):
        rm.train()
        rm.backbone.set_gradient_checkpointing(on)
        calls.clear()
        runs[on] = grads_of(rm, pairs, max_tokens_per_microbatch=None)
        assert len(calls) == (2 if on else 1)  # forward, and again in backward when on
    assert_same(runs[True], runs[False])
    rm.backbone.set_gradient_checkpointing(False)
    rm.fit(pairs, progress=False)  # turns it on for training and off afterwards
    rm.train()
    calls.clear()
    grads_of(rm, pairs)
    assert len(calls) == 1


SHAPE = ModelShape(
    params=135_000_000,
    trainable=2_400_000,
    hidden=576,
    layers=30,
    heads=9,
    intermediate=1536,
    vocab=49152,
)


def estimate(shape: ModelShape = SHAPE, shared: bool = True, **config) -> float:
    return estimate_training_memory(shape, RewardConfig(**config), shared=shared).total_mib


def test_estimate_is_monotone_in_every_setting():
    base = estimate()
    assert estimate(batch_size=16) > base
    assert estimate(max_prompt_tokens=1024) > base
    assert estimate(max_response_tokens=256) > base
    bigger = ModelShape(494_000_000, 4_400_000, 896, 24, 14, 4864, 151936)
    assert estimate(bigger) > base
    assert estimate(gradient_checkpointing=False) > base
    assert estimate(max_tokens_per_microbatch=None, batch_size=32) > estimate(batch_size=32)
    assert estimate(shared=False, max_tokens_per_microbatch=None) > estimate(
        max_tokens_per_microbatch=None
    )
    old = estimate(shared=False, gradient_checkpointing=False, max_tokens_per_microbatch=None)
    assert old > 16 * 1024 > 4096 > base  # the 21.6 GB default, and the new one


def test_warning_names_the_option_that_lowers_the_peak(tiny_lm, caplog):
    config = RewardConfig(gradient_checkpointing=False, max_tokens_per_microbatch=None)
    est = estimate_training_memory(SHAPE, config)
    assert memory_advice(est, est.total_mib + 1, config) is None
    assert memory_advice(est, None, config) is None
    advice = memory_advice(est, 3000.0, config)
    assert advice.startswith(f"estimated peak training memory {est.total_mib:.0f} MiB exceeds")
    assert advice.endswith("lower it with --set gradient_checkpointing=true")
    config = RewardConfig(batch_size=64)
    est = estimate_training_memory(SHAPE, config)
    advice = memory_advice(est, 2000.0, config)
    smaller = int(advice.rsplit("max_tokens_per_microbatch=", 1)[1])
    assert smaller < 8192
    lowered = RewardConfig(batch_size=64, max_tokens_per_microbatch=smaller)
    assert estimate_training_memory(SHAPE, lowered).total_mib <= 2000.0
    rm = rewards.create("global-rm", backbone=tiny_lm, device="cpu")
    with caplog.at_level(logging.WARNING, logger="persalign"):
        warn_if_short_of_memory(rm, available_mib=1.0)
    assert "exceeds the 1 MiB available; lower it with --set" in caplog.text


def test_available_memory_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nMemAvailable:    2048000 kB\n", encoding="ascii")
    assert available_memory_mib(meminfo) == 2000.0
    assert available_memory_mib(tmp_path / "missing") is None or available_memory_mib() > 0
