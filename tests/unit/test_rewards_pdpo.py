"""P-DPO: reward = beta (log pi_theta - log pi_ref) with soft tokens; adapt; greedy generation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

import persalign.rewards as rewards
from persalign.rewards.engine.pair_batching import collate_shared, tokenize_pairs
from persalign.rewards.methods._likelihood import adapters_disabled
from persalign.rewards.methods._pdpo_adapt import pair_logprob_sums, should_stop

from .rewards_synthetic import two_group_task

FAST = dict(
    device="cpu",
    batch_size=8,
    eval_batch_size=8,
    seed=0,
    backbone_lr=2e-3,
    head_lr=3e-3,
    user_lr=5e-2,
    adapt_steps=5,
    max_response_tokens=32,
)
PROMPTS = ["Say about cat sun", "Title: a study of cats on mats, and more words here"]
RESPONSES = ["cat alpha", "Mats omega!"]


@pytest.fixture(scope="module")
def pdpo(tiny_lm):
    train, new = two_group_task()
    rm = rewards.create("p-dpo", backbone=tiny_lm, max_steps=4, beta=0.7, **FAST)
    rm.fit(train, progress=False)
    for user, (support, _) in new.items():
        rm.adapt(user, support)
    return rm


def naive_logprobs(model, embeddings: torch.Tensor, start: int, targets: list[int]):
    """log p of ``targets`` from a full forward over ``embeddings`` [T, H]; the first target is
    predicted at position ``start - 1``."""
    with torch.no_grad():
        logits = model(inputs_embeds=embeddings[None]).logits[0].float()
    logp = logits.log_softmax(dim=-1)
    return torch.stack([logp[start + t - 1, tok] for t, tok in enumerate(targets)])


def test_defaults(tiny_lm):
    cfg = rewards.METHODS.get("p-dpo").config_class()
    assert cfg.n_soft_tokens == 8 and cfg.beta == 0.5 and cfg.alpha == 0.5
    # the P-RLHF repo's single learning rate, for the user tokens too (train and adapt)
    assert cfg.backbone_lr == cfg.head_lr == cfg.user_lr == 5e-5 and cfg.adapt_lr is None
    rm = rewards.create("p-dpo", backbone=tiny_lm, device="cpu")
    assert rm.user_dim == 8 * rm.backbone.hidden_size


def test_reward_is_beta_times_policy_minus_reference(pdpo, tiny_lm):
    reference = AutoModelForCausalLM.from_pretrained(tiny_lm)  # no LoRA at all
    users = ["new0", "train1"]
    got = pdpo.prefix_rewards(PROMPTS, RESPONSES, users)
    embed = pdpo.backbone.model.get_input_embeddings()
    n = pdpo.config.n_soft_tokens
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        p_ids, r_ids = pdpo.formatter.prompt_ids(prompt), pdpo.formatter.response_ids(response)
        ids = torch.tensor(p_ids + r_ids)
        z = pdpo.user_table[pdpo.user_ids[users[i]]].detach()
        soft = pdpo.generic_tokens.detach() + z.reshape(n, -1)  # e_0 + o_u, [n, H]
        with torch.no_grad():
            tokens = embed(ids)
            policy = naive_logprobs(
                pdpo.backbone.base, torch.cat([soft, tokens]), n + len(p_ids), r_ids
            )
            ref = naive_logprobs(
                reference, reference.get_input_embeddings()(ids), len(p_ids), r_ids
            )
        expect = 0.7 * (policy - ref).cumsum(0)
        torch.testing.assert_close(got.rewards[i, : len(r_ids)], expect, atol=1e-5, rtol=1e-5)


def test_users_get_different_rewards(pdpo):
    a = pdpo.sequence_rewards(PROMPTS, RESPONSES, ["new0", "new0"])
    b = pdpo.sequence_rewards(PROMPTS, RESPONSES, ["new1", "new1"])
    assert not torch.allclose(a, b)


def test_new_user_starts_from_the_generic_tokens(pdpo):
    pdpo.config = pdpo.config.model_copy(update={"adapt_steps": 0})
    try:
        pdpo.adapt("fresh", two_group_task()[1]["new0"][0])
    finally:
        pdpo.config = pdpo.config.model_copy(update={"adapt_steps": FAST["adapt_steps"]})
    z = pdpo.user_vectors(["fresh"])
    assert torch.all(z == 0)
    torch.testing.assert_close(pdpo.soft_tokens(z)[0], pdpo.generic_tokens.detach())


def test_adapt_trains_only_that_users_soft_tokens(pdpo):
    before = {n: t.clone() for n, t in pdpo.state_dict().items()}
    flags = {n: p.requires_grad for n, p in pdpo.named_parameters()}
    table = pdpo.user_table.detach().clone()
    support, _ = two_group_task()[1]["new1"]
    pdpo.adapt("another", support)
    after = pdpo.state_dict()
    for name, tensor in before.items():
        if name != "user_table":
            assert torch.equal(tensor, after[name]), name  # LoRA, generic tokens, base
    assert torch.equal(pdpo.user_table[: len(table)], table)  # other users untouched
    assert pdpo.user_table[pdpo.user_ids["another"]].abs().sum() > 0  # moved away from 0
    assert flags == {n: p.requires_grad for n, p in pdpo.named_parameters()}


def test_adapted_user_prefers_its_support_style(pdpo):
    _, new = two_group_task()
    for user in ("new0", "new1"):
        support, _ = new[user]
        chosen = pdpo.sequence_rewards(
            [p.prompt for p in support], [p.chosen for p in support], [user] * len(support)
        )
        rejected = pdpo.sequence_rewards(
            [p.prompt for p in support], [p.rejected for p in support], [user] * len(support)
        )
        assert float((chosen > rejected).float().mean()) >= 0.75, user


def test_training_loss_mixes_individual_and_generic_dpo(tiny_lm):
    train, _ = two_group_task()
    rm = rewards.create("p-dpo", backbone=tiny_lm, max_steps=1, alpha=0.3, **FAST)
    rm.fit(train, progress=False)  # sets up the users and moves LoRA away from zero
    rm.user_table.requires_grad_(True)
    optimizers = rm.make_optimizers()
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = 0.0
    pairs = train[:4] + train[30:34]
    prompts, users = [p.prompt for p in pairs], [p.user for p in pairs]

    def dpo(user_names):
        chosen = rm.sequence_rewards(prompts, [p.chosen for p in pairs], user_names)
        rejected = rm.sequence_rewards(prompts, [p.rejected for p in pairs], user_names)
        return -nn.functional.logsigmoid(chosen - rejected).mean()

    rm.add_user("__generic__", torch.zeros(rm.user_dim))
    expect = 0.3 * dpo(users) + 0.7 * dpo(["__generic__"] * len(pairs))
    got = rm.training_step(pairs, optimizers, 0)["loss"]
    assert abs(got - float(expect)) < 1e-5
    assert rm.generic_tokens.grad is not None and rm.generic_tokens.grad.abs().sum() > 0


def test_adapters_disabled_gives_the_base_model_and_keeps_flags(pdpo, tiny_lm):
    reference = AutoModelForCausalLM.from_pretrained(tiny_lm)
    ids = torch.tensor([[10, 11, 12, 13]])
    flags = [p.requires_grad for p in pdpo.parameters()]
    with torch.no_grad(), adapters_disabled(pdpo.backbone):
        got = pdpo.backbone.base(input_ids=ids).logits
    torch.testing.assert_close(got, reference(input_ids=ids).logits.detach())
    assert flags == [p.requires_grad for p in pdpo.parameters()]
    with torch.no_grad():
        assert not torch.allclose(pdpo.backbone.base(input_ids=ids).logits, got)


def test_step_rewards_after_dropping_rows(pdpo):
    prompts = [*PROMPTS, "Say about dog map"]
    users = ["new0", "new1", "train3"]
    ids = [pdpo.formatter.prompt_ids(p) for p in prompts]
    candidates = torch.tensor([[40, 41], [50, 51], [60, 61]])
    full = pdpo.start(ids, users)
    part = pdpo.start(ids, users)
    for state in (full, part):
        pdpo.step_rewards(state, candidates)
        pdpo.commit(state, torch.tensor([0, 1, 1]))
    part.select(torch.tensor([0, 2]))
    expect = pdpo.step_rewards(full, candidates)[[0, 2]]
    got = pdpo.step_rewards(part, candidates[[0, 2]])  # 2 rows vs 3: float32-sized
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)


def naive_greedy(rm, prompt_ids: list[int], user: str, steps: int, stops: set[int]) -> list[int]:
    """Recompute the whole sequence (soft tokens + prompt + generated) at every step."""
    embed = rm.backbone.model.get_input_embeddings()
    soft = rm.soft_tokens(rm.user_vectors([user]))[0].detach()
    out: list[int] = []
    for _ in range(steps):
        with torch.no_grad():
            inputs = torch.cat([soft, embed(torch.tensor(prompt_ids + out))])
            token = int(rm.backbone.base(inputs_embeds=inputs[None]).logits[0, -1].argmax())
        if token in stops:
            break
        out.append(token)
    return out


def test_generate_matches_a_naive_greedy_loop(pdpo):
    prompts = [*PROMPTS, "Say about dog map"]
    users = ["new0", "new1", "train3"]
    ids = [pdpo.formatter.prompt_ids(p) for p in prompts]
    got = pdpo.generate_ids(ids, users, max_new_tokens=10)
    stops = pdpo._stop_ids()
    for row, user in enumerate(users):
        assert got[row] == naive_greedy(pdpo, ids[row], user, 10, stops), row
    texts = pdpo.generate(prompts, users, max_new_tokens=10)
    assert texts == [pdpo.formatter.tokenizer.decode(g, skip_special_tokens=True) for g in got]


def test_generate_stops_at_eos(pdpo, monkeypatch):
    ids = [pdpo.formatter.prompt_ids(p) for p in PROMPTS]
    free = pdpo.generate_ids(ids, ["new0", "new1"], max_new_tokens=6)
    stop = free[0][2]  # pretend the third token of row 0 is the eos
    monkeypatch.setattr(pdpo, "_stop_ids", lambda: {stop})
    stopped = pdpo.generate_ids(ids, ["new0", "new1"], max_new_tokens=6)
    assert stopped[0] == free[0][: free[0].index(stop)]
    cut = free[1].index(stop) if stop in free[1] else len(free[1])
    assert stopped[1] == free[1][:cut]


def adapted(rm, user: str, support, **settings) -> tuple[torch.Tensor, list[float]]:
    """z and support losses of ``user`` adapted with the config fields ``settings``."""
    old = rm.config
    rm.config = old.model_copy(update=settings)
    try:
        rm.adapt(user, support)
    finally:
        rm.config = old
    return rm.user_vectors([user])[0].clone(), rm.adapt_losses[user]


def packed_pairs(rm, pairs):
    return collate_shared(tokenize_pairs(rm.formatter, pairs), rm.formatter.tokenizer.pad_token_id)


def test_shared_prompt_logprobs_equal_two_sequences(pdpo):
    support, _ = two_group_task()[1]["new0"]
    pairs = support[:5]
    z = pdpo.user_vectors(["new0"] * len(pairs))
    batch = pdpo.encode(
        [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]
    )
    packed = packed_pairs(pdpo, pairs)
    with torch.no_grad():
        expect = pdpo.policy_logprobs(batch, torch.cat([z, z])).sum(dim=1)  # [2n]
        chosen, rejected = pair_logprob_sums(pdpo.backbone, packed, pdpo.soft_tokens(z))
        ref = pdpo.reference_logprobs(batch).sum(dim=1)
        with adapters_disabled(pdpo.backbone):
            ref_c, ref_r = pair_logprob_sums(pdpo.backbone, packed)
    torch.testing.assert_close(torch.cat([chosen, rejected]), expect, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([ref_c, ref_r]), ref, rtol=1e-5, atol=1e-5)
    # a response must not see the other one: changing the chosen text moves only chosen sums
    swapped = [dataclasses.replace(p, chosen=p.chosen + " extra") for p in pairs]
    packed2 = packed_pairs(pdpo, swapped)
    with torch.no_grad():
        _, rejected2 = pair_logprob_sums(pdpo.backbone, packed2, pdpo.soft_tokens(z))
    torch.testing.assert_close(rejected2, rejected, rtol=1e-5, atol=1e-5)


def test_shared_prompt_adaptation_equals_the_two_sequence_path(pdpo):
    support, _ = two_group_task()[1]["new1"]
    fast, fast_losses = adapted(pdpo, "fast", support, adapt_shared_prompt=True)
    slow, slow_losses = adapted(pdpo, "slow", support, adapt_shared_prompt=False)
    assert len(fast_losses) == len(slow_losses) == FAST["adapt_steps"]
    torch.testing.assert_close(
        torch.tensor(fast_losses), torch.tensor(slow_losses), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)
    assert fast.abs().sum() > 0


def test_early_stopping_on_the_support_loss(pdpo):
    assert not should_stop([0.7, 0.6, 0.5], None, 0.0)
    assert not should_stop([0.7, 0.6, 0.65], 2, 0.0)  # 0.6 beat 0.7 one step ago
    assert should_stop([0.7, 0.6, 0.65, 0.61], 2, 0.0)
    assert should_stop([0.7, 0.69, 0.68], 2, 0.05)  # progress smaller than min_delta
    support, _ = two_group_task()[1]["new0"]
    # any drop below 1e9 is "no progress": the first loss is the best, 2 more steps, then stop
    stopped, losses = adapted(pdpo, "early", support, adapt_patience=2, adapt_min_delta=1e9)
    assert len(losses) == 3
    two_steps, _ = adapted(pdpo, "two", support, adapt_steps=2)
    torch.testing.assert_close(stopped, two_steps, rtol=1e-6, atol=0.0)  # z after 2 updates
    _, patient = adapted(pdpo, "patient", support, adapt_patience=50)
    assert len(patient) == FAST["adapt_steps"]
