"""Fused ARGS (one policy forward per step) writes exactly what two-model ARGS and the naive
reference write, with a frozen reward model on the policy's own weights; otherwise it falls back
and says why."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch

import persalign.rewards as rewards
from persalign.decoding.args import ArgsDecoder, ArgsSettings
from persalign.decoding.base import GenerationRequest
from persalign.decoding.fused_args import FusedArgs, fused_reason
from persalign.decoding.policy import Policy
from persalign.errors import ConfigError, validated
from persalign.rewards.engine.backbone import Backbone
from persalign.rewards.registry import METHODS

from ..reference import naive_args
from .test_args import PROMPTS

USERS = ["u1", "u2", "u3", "u1"]
STEPS, K, LAM = 8, 5, 3.0
PEAK = 20.0  # the policy's output layer x 20: lambda and the policy both decide some steps


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny forwards only: a second torch thread slows them down on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def requests() -> list[GenerationRequest]:
    pairs = enumerate(zip(PROMPTS, USERS, strict=True))
    return [GenerationRequest(f"q{i}", user, prompt) for i, (prompt, user) in pairs]


def frozen_rm(method: str, backbone: str, policy: Policy | None = None, **config):
    """An untrained reward model of ``method`` (LoRA B at zero: a frozen backbone) with three
    users' heads (or a scaled global head) large enough to matter at lambda = LAM; with
    ``policy``, its backbone is the policy's own model (one copy of the weights, no LoRA)."""
    spec = {"backbone": backbone, "device": "cpu", "seed": 0, **config}
    if policy is not None:
        cls = METHODS.get(method)
        on_policy = Backbone(policy.model, None)
        rm = cls(validated(cls.config_class, spec), backbone=on_policy, tokenizer=policy.tokenizer)
    else:
        rm = rewards.create(method, **spec)
    if rm.personalized:
        gen = torch.Generator().manual_seed(0)
        rm.set_users(["u1", "u2", "u3"], 3 * torch.randn(3, rm.user_dim, generator=gen))
    else:
        with torch.no_grad():
            rm.head.net[-1].weight.mul_(20.0)
    return rm.eval()


@pytest.fixture(scope="module")
def policy(tiny_lm: str) -> Policy:
    policy = Policy.load(tiny_lm, device="cpu")
    with torch.no_grad():
        policy.model.lm_head.weight.mul_(PEAK)  # the output layer is not the rewards' business
    return policy


@pytest.fixture(scope="module")
def rms(tiny_lm: str) -> dict[str, object]:
    return {m: frozen_rm(m, tiny_lm) for m in ("mpu", "global-rm-v2")}


def generate(policy, rm, fused: str, **settings) -> list[list[int]]:
    decoder = ArgsDecoder(policy, rm, ArgsSettings(fused=fused, **settings))
    assert (decoder.fused_reason is None) == (fused != "off")
    return [g.tokens for g in decoder.generate(requests(), progress=False)]


def no_reward_forward(rm, monkeypatch) -> None:
    """Fused decoding must never run the reward model's own backbone."""

    def refuse(*args, **kwargs):
        raise AssertionError("the reward model's backbone ran in fused mode")

    monkeypatch.setattr(rm.backbone, "decode_hidden", refuse)


@pytest.mark.parametrize("method", ["mpu", "global-rm-v2"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_greedy_fused_equals_unfused_and_naive(policy, rms, method, batch_size, monkeypatch):
    rm = rms[method]
    common = {"lam": LAM, "k": K, "max_new_tokens": STEPS, "batch_size": batch_size}
    unfused = generate(policy, rm, "off", **common)
    with monkeypatch.context() as patch:
        no_reward_forward(rm, patch)
        fused = generate(policy, rm, "on", **common)
    naive = [naive_args(policy, rm, r.prompt, r.user, K, LAM, STEPS) for r in requests()]
    assert fused == unfused == naive
    greedy = generate(policy, rm, "on", **{**common, "lam": 0.0})
    assert greedy != fused, "lambda must change the output here, or the test shows nothing"


@pytest.mark.parametrize("batch_size", [1, 4])
def test_seeded_sampling_fused_equals_unfused(policy, rms, batch_size):
    common = {
        "lam": LAM,
        "k": K,
        "max_new_tokens": STEPS,
        "batch_size": batch_size,
        "mode": "sample",
        "temperature": 30.0,
        "seed": 3,
        "ignore_eos": True,
    }
    fused = generate(policy, rms["mpu"], "on", **common)
    assert fused == generate(policy, rms["mpu"], "off", **common)
    assert all(len(t) == STEPS for t in fused)
    assert fused != generate(policy, rms["mpu"], "on", **{**common, "seed": 4})


def test_rows_carry_their_own_user_lambda_and_k(policy, rms):
    """The serve-facing step: one batch, per-row lambdas and k, equals each row decoded alone."""
    rm, lams, ks = rms["mpu"], [0.0, 1.0, 3.0, 8.0], [2, 5, 5, 3]
    fused = FusedArgs(policy, rm)
    state = fused.start([policy.formatter.prompt_ids(p) for p in PROMPTS], USERS)
    eos, out = sorted(policy.eos_ids()), []
    for _ in range(STEPS):
        logits = state.logits.clone()  # [B, V]
        logits[:, eos] = float("-inf")  # as ignore_eos
        out.append(fused.step(state, torch.tensor(lams), ks, lambda s: s.argmax(-1), logits))
    rows = torch.stack(out, dim=1).tolist()  # [B, STEPS]
    for i, request in enumerate(requests()):
        settings = ArgsSettings(lam=lams[i], k=ks[i], max_new_tokens=STEPS, ignore_eos=True)
        alone = ArgsDecoder(policy, rm, settings.model_copy(update={"fused": "off"}))
        expect = alone.generate([request], progress=False)[0].tokens
        assert rows[i] == expect, (i, lams[i], ks[i])
    assert len({tuple(r) for r in rows}) == len(rows)


def test_a_reward_model_on_the_policys_own_model(policy, rms, tiny_lm):
    """No second copy of the weights: the reward model's backbone is the policy's model."""
    shared = frozen_rm("mpu", tiny_lm, policy)
    assert fused_reason(policy, shared) is None
    common = {"lam": LAM, "k": K, "max_new_tokens": STEPS, "batch_size": 4}
    assert generate(policy, shared, "on", **common) == generate(policy, rms["mpu"], "off", **common)


def lora_trained(tiny_lm: str):
    rm = frozen_rm("mpu", tiny_lm)
    with torch.no_grad():
        for name, param in rm.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(1))
    return rm


FALLBACKS = {
    "other backbone": (lambda lm, other: frozen_rm("mpu", other), "different base weights"),
    "LoRA": (lambda lm, other: lora_trained(lm), "LoRA weights are not zero"),
    "template": (
        lambda lm, other: frozen_rm("mpu", lm, use_chat_template=False),
        "chat template",
    ),
    "method": (lambda lm, other: rewards.create("genarm", backbone=lm), "not a head"),
}


@pytest.mark.parametrize("case", sorted(FALLBACKS))
def test_falls_back_and_says_why(policy, tiny_lm, tiny_lm_other, case, caplog):
    build, reason = FALLBACKS[case]
    rm = build(tiny_lm, tiny_lm_other)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="persalign.decoding.args"):
        decoder = ArgsDecoder(policy, rm, ArgsSettings(k=3, max_new_tokens=2))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(lines) == 1 and reason in lines[0] and reason in decoder.fused_reason
    assert not decoder.fused_now
    with pytest.raises(ConfigError, match=f"fused: on, but .*{reason}"):
        ArgsDecoder(policy, rm, ArgsSettings(fused="on"))


def test_a_prompt_cut_at_another_budget_falls_back_for_that_call(policy, tiny_lm, caplog):
    rm = frozen_rm("mpu", tiny_lm, max_prompt_tokens=12)
    decoder = ArgsDecoder(policy, rm, ArgsSettings(lam=LAM, k=K, max_new_tokens=4))
    assert decoder.fused_reason is None  # the budgets differ, but short prompts fit both
    short = [r for r in requests() if len(policy.formatter.prompt_ids(r.prompt)) < 12]
    assert short and len(short) < len(PROMPTS)
    decoder.generate(short, progress=False)
    assert decoder.fused_now
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="persalign.decoding.args"):
        out = decoder.generate(requests(), progress=False)
    assert not decoder.fused_now and "another token budget" in caplog.text
    naive = [naive_args(policy, rm, r.prompt, r.user, K, LAM, 4) for r in requests()]
    assert [g.tokens for g in out] == naive
    with pytest.raises(ConfigError, match="another token budget"):
        ArgsDecoder(policy, rm, ArgsSettings(fused="on")).generate(requests(), progress=False)
