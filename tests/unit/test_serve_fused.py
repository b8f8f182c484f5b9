"""``persalign serve`` on fused ARGS: with a frozen reward model on the policy's weights, served
tokens equal the two-model serve path and the offline ``ArgsDecoder``, rows of other users,
lambdas and k joining a running batch; the reward model is loaded onto the policy's own
storage; a LoRA-trained reward model falls back, saying why."""

from __future__ import annotations

import logging

import pytest
import torch

from persalign.decoding.args import ArgsDecoder, ArgsSettings
from persalign.decoding.base import GenerationRequest
from persalign.decoding.fused_args import FusedState
from persalign.decoding.policy import Policy
from persalign.serve.engine import FUSED_KEY, Engine, Row, RowSpec
from persalign.serve.scheduler import Scheduler
from persalign.serve.sharing import load_reward_for, sharing_reason

from . import test_fused_args
from .test_fused_args import frozen_rm
from .test_serve_engine import PROMPTS, USERS, run_scheduler, run_staggered

LAMS = [3.0, 0.0, 8.0, 1.0, 3.0]
KS = [5, 2, 5, 3, 4]
BUDGETS = [6, 3, 8, 4, 5]
one_thread = test_fused_args.one_thread  # autouse: tiny forwards on one torch thread
policy = test_fused_args.policy  # the tiny policy, its output layer scaled (PEAK)


@pytest.fixture(scope="module")
def rm(policy: Policy, tiny_lm: str):
    """A frozen MPU reward model on the policy's own model (three users)."""
    return frozen_rm("mpu", tiny_lm, policy)


def row(policy, i: int, temperature: float = 0.0, seed: int = 0, prompt_ids=None) -> Row:
    ids = policy.formatter.prompt_ids(PROMPTS[i])
    spec = RowSpec(
        policy_ids=ids,
        reward_ids=list(ids if prompt_ids is None else prompt_ids),
        reward_user=USERS[i],
        max_tokens=BUDGETS[i],
        lam=LAMS[i],
        k=KS[i],
        temperature=temperature,
        seed=seed,
    )
    return Row(spec, sink=lambda *_: None)


def offline(policy, rm, i: int, temperature: float = 0.0, seed: int = 0) -> list[int]:
    """The reference: the shared decoder, unfused, one request at a time."""
    mode = {"mode": "sample", "temperature": temperature} if temperature else {}
    settings = ArgsSettings(
        lam=LAMS[i], k=KS[i], max_new_tokens=BUDGETS[i], seed=seed, fused="off", **mode
    )
    request = GenerationRequest(f"q{i}", USERS[i], PROMPTS[i])
    return ArgsDecoder(policy, rm, settings).generate([request], progress=False)[0].tokens


def unfused(engine: Engine) -> Engine:
    engine.fused = None  # the two-model serve path on the same models
    return engine


@pytest.mark.parametrize("temperature", [0.0, 30.0], ids=["greedy", "seeded-sampling"])
def test_fused_serving_equals_unfused_serving_and_offline_args(policy, rm, temperature, caplog):
    with caplog.at_level(logging.INFO, logger="persalign.serve.engine"):
        engine = Engine(policy, rm)
    assert engine.fused is not None and engine.fused_reason is None
    assert "fused" in caplog.text and "apart" not in caplog.text
    joins = {2: [1, 2], 4: [3, 4]}  # other users, lambdas and k join the running batch
    seeds = [10 + i for i in range(5)]
    fused = [row(policy, i, temperature, seeds[i]) for i in range(5)]
    seen = []
    real_step = engine.fused.step

    def step(state, *args):  # one batch of FusedState, every row in it
        seen.append((type(state), len(state.logits)))
        return real_step(state, *args)

    engine.fused.step = step
    assert engine.key(fused[0]) == engine.key(fused[1]) == FUSED_KEY  # k differs, one batch
    run_staggered(engine, fused, dict(joins))
    assert {kind for kind, _ in seen} == {FusedState} and max(n for _, n in seen) >= 3
    two = [row(policy, i, temperature, seeds[i]) for i in range(5)]
    for r in two:  # one k per two-model batch: run each row alone
        run_staggered(unfused(Engine(policy, rm)), [r], {})
    for i in range(5):
        expect = offline(policy, rm, i, temperature, seeds[i])
        assert fused[i].tokens == two[i].tokens == expect, i
    assert len({tuple(r.tokens) for r in fused}) > 1


def test_scheduler_joins_fused_rows_and_routes_other_ids_apart(policy, rm):
    """Rows whose reward-model ids differ from their policy ids take the two-model batch."""
    engine = Engine(policy, rm)
    odd = row(policy, 0, prompt_ids=list(rm.formatter.tokenizer(PROMPTS[0])["input_ids"]))
    assert engine.key(odd) != FUSED_KEY
    rows = [row(policy, i) for i in range(4)] + [odd]
    outcome = run_scheduler(Scheduler(engine, max_batch=8), rows)
    for i in range(4):
        assert outcome[i][0] == "done" and outcome[i][1]["tokens"] == offline(policy, rm, i)
    assert outcome[4][0] == "done" and len(outcome[4][1]["tokens"]) >= 1


def test_a_frozen_reward_model_loads_onto_the_policys_weights(policy, tiny_lm, tmp_path, caplog):
    saved = frozen_rm("mpu", tiny_lm)  # a backbone of its own, LoRA at zero
    saved.save(tmp_path / "rm")
    assert sharing_reason(tmp_path / "rm", policy, device="cpu") is None
    with caplog.at_level(logging.INFO):
        shared = load_reward_for(tmp_path / "rm", policy, device="cpu")
        engine = Engine(policy, shared)
    assert "policy's weights" in caplog.text and "fused" in caplog.text
    mine = {p.data_ptr() for p in policy.model.parameters()}
    assert {p.data_ptr() for p in shared.backbone.parameters()} <= mine  # same storage
    assert engine.fused is not None
    torch.testing.assert_close(shared.user_table, saved.user_table)
    r = row(policy, 0)
    run_staggered(engine, [r], {})
    assert r.tokens == offline(policy, saved, 0)


def test_a_lora_trained_reward_model_falls_back_and_says_why(policy, tiny_lm, tmp_path, caplog):
    trained = frozen_rm("mpu", tiny_lm)
    with torch.no_grad():
        for name, p in trained.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    trained.save(tmp_path / "rm")
    assert "LoRA weights are not zero" in sharing_reason(tmp_path / "rm", policy, device="cpu")
    with caplog.at_level(logging.INFO):
        own = load_reward_for(tmp_path / "rm", policy, device="cpu")
        engine = Engine(policy, own)
    assert "backbone of its own" in caplog.text
    assert engine.fused is None and "LoRA weights are not zero" in engine.fused_reason
    assert "apart: the reward model's LoRA weights are not zero" in caplog.text
    mine = {p.data_ptr() for p in policy.model.parameters()}
    assert not mine & {p.data_ptr() for p in own.backbone.parameters()}
    r = row(policy, 1)
    assert engine.key(r) != FUSED_KEY
    run_staggered(engine, [r], {})
    assert r.tokens == offline(policy, own, 1)
