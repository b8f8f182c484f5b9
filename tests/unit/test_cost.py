"""What a cell costs (persalign.runs.cost): forward passes counted against independent counts,
tokens, decoding time, peak memory, and the model job's training and adaptation times."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import pytest
import torch

import persalign.rewards as rewards
from persalign.decoding import GenerationRequest, Policy, create_decoder
from persalign.metrics.schema import COST_FIELDS
from persalign.rewards.engine.backbone import Backbone
from persalign.runs.cost import CostMeter, model_costs

FAST = dict(device="cpu", eval_batch_size=8, seed=0, max_response_tokens=32)
REQUESTS = [GenerationRequest(str(i), "u", f"Say about topic {i}") for i in range(3)]


@pytest.fixture(scope="module")
def policy(tiny_lm_other: str) -> Policy:
    return Policy.load(tiny_lm_other, device="cpu")


@pytest.fixture(scope="module")
def rm(tiny_lm: str):
    model = rewards.create("global-rm", backbone=tiny_lm, **FAST)
    model.eval()
    return model


def test_zero_shot_counts_one_policy_row_per_token(policy):
    """3 prompts x 4 tokens, eos ignored: 3 prompt rows + 3 x 3 cached steps = 12 rows for 12
    tokens (no step after the last token)."""
    decoder = create_decoder("zero-shot", policy, max_new_tokens=4, ignore_eos=True, batch_size=2)
    meter = CostMeter()
    with meter.counting(decoder, writer=policy.model):
        gens = decoder.generate(REQUESTS, progress=False)
    assert meter.tokens == 12 == sum(len(g.tokens) for g in gens)
    assert meter.rows == {"policy": 12, "reward": 0} and meter.seconds > 0
    meter.generations = [g.to_json() for g in gens]
    cost = meter.cost()
    assert set(cost) == set(COST_FIELDS)
    assert cost["policy_forwards_per_token"] == 1.0 and cost["reward_forwards_per_token"] == 0.0
    assert cost["tokens_generated"] == 12 and cost["train_seconds"] is None
    assert "generate" not in vars(decoder) and not policy.model._forward_pre_hooks  # undone


def test_args_counts_equal_an_independent_count(policy, rm, monkeypatch):
    """Rows through the reward backbone as a class-level spy sees them (every hidden and
    decode_hidden call), and through the policy as its forward calls see them."""
    seen = {"reward": 0, "policy": 0}

    def spy(name: str):
        original = getattr(Backbone, name)

        def counted(self, input_ids, attention_mask, *args: Any, **kwargs: Any):
            seen["reward"] += attention_mask.shape[0]
            return original(self, input_ids, attention_mask, *args, **kwargs)

        return counted

    for name in ("hidden", "decode_hidden"):
        monkeypatch.setattr(Backbone, name, spy(name))
    forward = policy.model.forward

    def policy_spy(*args: Any, **kwargs: Any):
        seen["policy"] += kwargs["input_ids"].shape[0]
        return forward(*args, **kwargs)

    monkeypatch.setattr(policy.model, "forward", policy_spy)
    decoder = create_decoder(
        "args", policy, reward_model=rm, lam=1.0, k=3, max_new_tokens=5, batch_size=3
    )
    meter = CostMeter()
    with meter.counting(decoder, writer=policy.model, reward=rm.backbone):
        gens = decoder.generate(REQUESTS, progress=False)
    assert meter.rows == seen and seen["reward"] > 0 and seen["policy"] > 0
    assert meter.tokens == sum(len(g.tokens) for g in gens) > 0
    meter.generations = [g.to_json() for g in gens]
    cost = meter.cost()
    assert cost["reward_forwards_per_token"] == round(seen["reward"] / meter.tokens, 4)
    assert "hidden" not in vars(rm.backbone) and "decode_hidden" not in vars(rm.backbone)


def test_fused_args_counts_the_policys_decoder_stack_and_no_reward_rows(tiny_lm, monkeypatch):
    """Fused ARGS (an untrained reward model, LoRA at zero, on the policy's own weights): the
    policy's decoder stack gives the rewards too, so the reward backbone counts 0 rows and the
    policy counts what an independent class-level spy on ``Policy.decode_hidden`` sees (before
    the fix the fused path counted 0 and 0)."""
    seen = {"policy": 0}
    original = Policy.decode_hidden

    def spy(self, input_ids, *args: Any, **kwargs: Any):
        seen["policy"] += input_ids.shape[0]
        return original(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(Policy, "decode_hidden", spy)
    policy = Policy.load(tiny_lm, device="cpu")
    rm = rewards.create("global-rm", backbone=tiny_lm, device="cpu", seed=0).eval()
    decoder = create_decoder(
        "args", policy, reward_model=rm, lam=1.0, k=3, max_new_tokens=4, batch_size=3
    )
    assert decoder.fused_reason is None  # the fused path, or this test proves nothing
    meter = CostMeter()
    with meter.counting(decoder, writer=policy, reward=rm.backbone):
        gens = decoder.generate(REQUESTS, progress=False)
    assert meter.tokens == sum(len(g.tokens) for g in gens) > 0
    assert meter.rows == {"policy": seen["policy"], "reward": 0} and seen["policy"] > 0
    meter.generations = [g.to_json() for g in gens]
    cost = meter.cost()
    assert cost["policy_forwards_per_token"] == round(seen["policy"] / meter.tokens, 4)
    assert cost["reward_forwards_per_token"] == 0.0
    assert "decode_hidden" not in vars(policy) and not policy.model._forward_pre_hooks  # undone


def test_resumed_cells_fall_back_to_the_generations_own_seconds():
    meter = CostMeter()
    meter.generations = [{"tokens": [1, 2, 3], "seconds": 0.3}, {"tokens": [4], "seconds": 0.1}]
    cost = meter.cost()
    assert cost["decode_seconds_per_token"] == pytest.approx(0.1, rel=1e-6)
    assert cost["policy_forwards_per_token"] is None and cost["tokens_generated"] == 4
    meter.generations = None  # a cell that does not generate
    assert meter.cost()["tokens_generated"] is None


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="utf-8") as handle:
        return int(re.search(r"VmRSS:\s+(\d+)", handle.read()).group(1)) / 1024


def test_peak_memory_sees_a_temporary_allocation():
    meter = CostMeter()
    if not sys.platform.startswith("linux"):
        with meter.peak_memory():
            pass
        assert meter.peak_rss_mib and meter.peak_rss_mib > 0
        return
    before = _rss_mib()
    with meter.peak_memory():
        block = torch.ones(64 * 1024 * 1024)  # 256 MiB, touched
        del block
    assert meter.peak_rss_mib >= before + 200
    if not torch.cuda.is_available():
        assert meter.peak_gpu_mib is None


def test_model_costs_read_the_model_job(tmp_path):
    (tmp_path / "run_model.json").write_text(
        json.dumps({"train_seconds": 12.5, "adapt_seconds": 3.0, "adapt_users": 4})
    )
    assert model_costs(tmp_path) == {"train_seconds": 12.5, "adapt_seconds_per_user": 0.75}
    (tmp_path / "run_model.json").write_text(json.dumps({"seconds": 9.0}))  # an older model
    assert model_costs(tmp_path) == {"train_seconds": None, "adapt_seconds_per_user": None}
    assert model_costs(None) == {"train_seconds": None, "adapt_seconds_per_user": None}
