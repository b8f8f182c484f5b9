"""Independent references for reward heads: plain transformers + peft + torch, weights copied.

    decoder = reference_decoder(rm, tiny_lm)          # HF model, peft LoRA, rm's LoRA weights
    expect = reference_prefix_rewards(rm, decoder, prompt, response, user)   # [R]

Nothing here calls the package's heads, aggregation, padding or backbone: a reference rebuilds
the LoRA model from the checkpoint and the trained state dict, runs one unpadded sequence, and
applies a head written out in torch with the trained module's weights. The package only
tokenizes (``rm.formatter``), which is not what these references check. Used by the paper
fidelity test of issue 12, item 14 (global-rm, global-rm-v2, mpu, mpu-avg, the VPL reward MLP).
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM

import persalign.rewards as rewards

from .rewards_synthetic import two_group_task
from .test_rewards_contract import FAST as CONTRACT_FAST

REFERENCE_METHODS = ["global-rm", "global-rm-v2", "mpu", "mpu-avg", "vpl"]
FAST = {**CONTRACT_FAST, "adapt_steps": 10}  # the contract tests' tiny-task settings
SMALL = {"vpl": dict(latent_dim=4, encoder_width=16, decoder_width=16, context_size=4)}


def trained_model(method: str, spec: str, steps: int = 4) -> rewards.RewardModel:
    """A few training steps (LoRA and heads move away from their init), two adapted users."""
    train, new = two_group_task()
    rm = rewards.create(method, backbone=spec, max_steps=steps, **FAST, **SMALL.get(method, {}))
    rm.fit(train, progress=False)
    for user in ("new0", "new1"):
        rm.adapt(user, new[user][0])
    return rm


def reference_decoder(rm: rewards.RewardModel, spec: str) -> nn.Module:
    """The checkpoint's decoder stack with plain peft LoRA holding ``rm``'s trained weights."""
    cfg = rm.config
    base = AutoModelForCausalLM.from_pretrained(spec, torch_dtype=torch.float32)
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        use_rslora=cfg.use_rslora,
        target_modules="all-linear",
        bias="none",
    )
    model = get_peft_model(base, lora)
    trained = {
        name.removeprefix("backbone.model."): tensor
        for name, tensor in rm.state_dict().items()
        if "lora_" in name
    }
    wanted = {name for name in model.state_dict() if "lora_" in name}
    assert set(trained) == wanted, "every LoRA weight is copied, and nothing else"
    result = model.load_state_dict(trained, strict=False)
    assert not result.unexpected_keys
    model.eval()
    return model.get_base_model().get_decoder()


def copied(module: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> nn.Module:
    """``module`` with the weights under ``prefix`` of a trained state dict copied in."""
    module.load_state_dict(
        {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    )
    return module.eval()


def head_values(rm: rewards.RewardModel, hidden: torch.Tensor, user: str) -> torch.Tensor:
    """Per-position values [T] of hidden states [T, H], each method's head written out."""
    state = {k: v.detach().float().cpu() for k, v in rm.state_dict().items()}
    size = hidden.shape[-1]
    if rm.name in ("global-rm", "global-rm-v2"):
        width = state["head.net.0.weight"].shape[0]
        net = nn.Sequential(nn.Linear(size, width), nn.GELU(), nn.Linear(width, 1))
        return copied(net, state, "head.net.")(hidden)[:, 0]
    z = state["user_table"][rm.user_ids[user]]
    if rm.name in ("mpu", "mpu-avg"):
        width = rm.config.head_width  # z = [W1 (w x H, row-major), b1 (w), w2 (w), b2 (1)]
        first, second = nn.Linear(size, width), nn.Linear(width, 1)
        with torch.no_grad():
            first.weight.copy_(z[: width * size].view(width, size))
            first.bias.copy_(z[width * size : width * size + width])
            second.weight.copy_(z[width * size + width : width * size + 2 * width][None])
            second.bias.copy_(z[-1:])
        return nn.Sequential(first, nn.GELU(), second)(hidden)[:, 0]
    if rm.name == "vpl":
        width, latent = rm.config.decoder_width, len(z)
        net = nn.Sequential(
            nn.Linear(size + latent, width),
            nn.LeakyReLU(0.2),
            nn.Linear(width, width),
            nn.LeakyReLU(0.2),
            nn.Linear(width, 1),
        )
        inputs = torch.cat([hidden, z[None].expand(len(hidden), -1)], dim=-1)  # [T, H + d]
        return copied(net, state, "decoder.")(inputs)[:, 0]
    raise ValueError(f"no reference for {rm.name}")


@torch.no_grad()
def reference_prefix_rewards(
    rm: rewards.RewardModel, decoder: nn.Module, prompt: str, response: str, user: str
) -> torch.Tensor:
    """r(x, y_<=t) for every t of one response, [R], from one unpadded forward pass."""
    prompt_ids = rm.formatter.prompt_ids(prompt)
    response_ids = rm.formatter.response_ids(response)
    ids = torch.tensor([prompt_ids + response_ids])
    hidden = decoder(input_ids=ids).last_hidden_state[0].float()  # [T, H]
    values = head_values(rm, hidden[len(prompt_ids) :], user)  # [R] at the response tokens
    if rm.name == "global-rm-v2":  # the mean over the prefix's response tokens
        return values.cumsum(0) / torch.arange(1, len(values) + 1)
    return values  # read at the prefix's last token


def test_reference_backbone_is_the_trained_lora_model(tiny_lm: str):
    """The reference decoder equals the package's LoRA backbone and differs from the base."""
    rm = trained_model("global-rm", tiny_lm)
    decoder = reference_decoder(rm, tiny_lm)
    plain = AutoModelForCausalLM.from_pretrained(tiny_lm, torch_dtype=torch.float32)
    ids = torch.tensor([[10, 20, 30, 40, 50]])
    mask, positions = torch.ones_like(ids), torch.arange(5)[None]
    with torch.no_grad():
        expect = decoder(input_ids=ids).last_hidden_state
        got, _ = rm.backbone.hidden(ids, mask, positions)
        untrained = plain.get_decoder()(input_ids=ids).last_hidden_state
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(untrained, expect, rtol=1e-3, atol=1e-4), "LoRA moved nothing"


@pytest.mark.parametrize("method", REFERENCE_METHODS)
def test_reference_heads_depend_on_their_weights(method: str, tiny_lm: str):
    """Not vacuous: perturbing the trained head (or user) changes the reference's values."""
    rm = rewards.create(method, backbone=tiny_lm, **FAST, **SMALL.get(method, {}))
    if rm.personalized:
        rm.add_user("u", torch.randn(rm.user_dim) * 0.1)
    hidden = torch.randn(3, rm.backbone.hidden_size)
    before = head_values(rm, hidden, "u")
    with torch.no_grad():
        for name, param in rm.named_parameters():
            if not name.startswith("backbone."):
                param.add_(0.05)
    assert not torch.allclose(head_values(rm, hidden, "u"), before)
