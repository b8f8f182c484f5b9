"""The merged inference view of a LoRA backbone computes what the LoRA backbone computes."""

from __future__ import annotations

import torch

from persalign.rewards.engine.backbone import Backbone, LoraSettings
from persalign.rewards.engine.inference import TransposedLinear, merged_decoder


def lora_backbone(tiny_lm: str) -> Backbone:
    backbone = Backbone.load(tiny_lm, LoraSettings(), device="cpu")
    torch.manual_seed(0)
    for param in backbone.trainable_parameters():  # LoRA B starts at zero: make it matter
        param.data.normal_(0, 0.2)
    return backbone


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 11, 12, 13]])  # [B, T], row 1 left-padded
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, positions


def test_merged_view_matches_lora_forward(tiny_lm: str):
    backbone = lora_backbone(tiny_lm)
    ids, mask, positions = inputs()
    with torch.no_grad():
        expect, _ = backbone.hidden(ids, mask, positions)
    got, _ = backbone.decode_hidden(ids, mask, positions)
    real = mask.bool()
    torch.testing.assert_close(got[real], expect[real], atol=1e-4, rtol=1e-4)
    # Without the adapters the outputs would differ: the test sees the merge.
    with backbone.model.disable_adapter(), torch.no_grad():
        plain, _ = backbone.hidden(ids, mask, positions)
    assert (plain[real] - expect[real]).abs().max() > 1e-3


def test_every_linear_is_replaced_and_other_tensors_are_shared(tiny_lm: str):
    backbone = lora_backbone(tiny_lm)
    merged = merged_decoder(backbone.decoder)
    assert not any(isinstance(m, torch.nn.Linear) for m in merged.modules())
    assert any(isinstance(m, TransposedLinear) for m in merged.modules())
    original = {p.data_ptr() for p in backbone.decoder.parameters()}
    embed = merged.get_input_embeddings().weight
    assert embed.data_ptr() in original  # shared, not copied
    assert not any(p.requires_grad for p in merged.parameters())


def test_view_is_rebuilt_after_the_weights_change(tiny_lm: str):
    backbone = lora_backbone(tiny_lm)
    ids, mask, positions = inputs()
    before, _ = backbone.decode_hidden(ids, mask, positions)
    with torch.no_grad():
        for name, param in backbone.model.named_parameters():
            if "lora_B" in name:
                param.mul_(2.0)  # an optimizer step is an in-place update like this one
        expect, _ = backbone.hidden(ids, mask, positions)
    after, _ = backbone.decode_hidden(ids, mask, positions)
    real = mask.bool()
    assert (after[real] - before[real]).abs().max() > 1e-3
    torch.testing.assert_close(after[real], expect[real], atol=1e-4, rtol=1e-4)


def test_transposed_linear_equals_the_linear_layer_on_every_kernel(monkeypatch):
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40)
    for onednn in (True, False):
        monkeypatch.setattr("persalign.rewards.engine.inference.use_onednn", lambda w, o=onednn: o)
        fast = TransposedLinear(layer.weight, layer.bias)
        assert fast.onednn == onednn and fast.weight.shape == (40, 24)
        assert fast.in_features == 24 and fast.out_features == 40
        for shape in ((1, 24), (10, 24), (2, 10, 24), (3, 1, 24)):
            x = torch.randn(shape)
            with torch.no_grad():
                torch.testing.assert_close(fast(x), layer(x), rtol=1e-5, atol=1e-5)
