"""A merged, inference-only view of a LoRA backbone: what reward-guided decoding runs on.

    decoder = merged_decoder(backbone.decoder)     # LoRA folded in, weights transposed
    decoder(input_ids=..., attention_mask=..., position_ids=..., cache=cache, use_cache=True)

Each decoding step of ARGS pushes k candidate tokens through the reward model. Two things make
that small batch slow on a CPU: every LoRA-wrapped linear runs three matrix products instead of
one, and a [k, in] x [out, in]^T product (``nn.Linear``'s layout) takes a slow GEMM path for
small k. The merged view folds each adapter into its base weight once (W + B A * scale), so a
step is one product per layer, run on oneDNN on a float32 CPU (MKL's GEMM is ~1.5x slower for
10-20 rows there) and as ``x @ W^T`` with W^T stored contiguous elsewhere
(see benchmarks/bench_args.py).

The view shares every other tensor (embeddings, norms, rotary buffers) with the original, so it
costs one extra copy of the linear weights. It is a snapshot: :class:`MergedCache` rebuilds it
whenever a parameter of the original changes (training steps bump tensor versions). The
training and scoring paths never use it, so gradients never see it.
"""

from __future__ import annotations

import copy

import torch
from peft.tuners.lora import LoraLayer
from torch import nn


def use_onednn(weight: torch.Tensor) -> bool:
    """Whether a frozen linear layer runs on oneDNN: float32 on a CPU with oneDNN (mkldnn)."""
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
    )


class TransposedLinear(nn.Module):
    """y = x @ W^T + b for a frozen, merged weight, on the fastest kernel for few rows.

    On a float32 CPU the product runs on oneDNN (``mkldnn._linear_pointwise``, W kept [out, in]):
    for the 10-20 rows of a reward step it is about twice as fast as MKL's GEMM, which takes a
    slow path on some CPUs. Elsewhere W^T is stored contiguous [in, out] for ``matmul``.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.onednn = use_onednn(weight)
        stored = weight.detach().contiguous() if self.onednn else weight.detach().t().contiguous()
        self.register_buffer("stored", stored, persistent=False)
        self.register_buffer(
            "bias", None if bias is None else bias.detach().clone(), persistent=False
        )
        self.out_features, self.in_features = self.weight.shape

    @property
    def weight(self) -> torch.Tensor:
        """The [out, in] weight, for code that inspects ``.weight`` (dtype, device, shape)."""
        return self.stored if self.onednn else self.stored.t()

    @property
    def weight_t(self) -> torch.Tensor:
        """The [in, out] view."""
        return self.stored.t() if self.onednn else self.stored

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(x, self.stored, self.bias, "none", [], "")
        out = torch.matmul(x, self.stored)
        return out if self.bias is None else out + self.bias


def merged_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The effective (weight [out, in], bias) of a plain or LoRA-wrapped linear layer."""
    if isinstance(module, LoraLayer):
        base = module.get_base_layer()
        weight = base.weight.detach().clone()
        if not module.merged:
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    weight += module.get_delta_weight(adapter).to(weight.dtype)
        return weight, base.bias
    return module.weight, module.bias


@torch.no_grad()
def merged_decoder(decoder: nn.Module) -> nn.Module:
    """A copy of ``decoder`` whose linear layers are merged :class:`TransposedLinear` s."""
    memo: dict[int, object] = {}
    for module in decoder.modules():
        if isinstance(module, LoraLayer) or (
            isinstance(module, nn.Linear) and id(module) not in memo
        ):
            if isinstance(module, LoraLayer) and not isinstance(module.get_base_layer(), nn.Linear):
                continue  # e.g. a LoRA on an embedding: copied as is
            memo[id(module)] = TransposedLinear(*merged_weight(module))
            if isinstance(module, LoraLayer):
                memo[id(module.get_base_layer())] = memo[id(module)]
    for tensor in list(decoder.parameters()) + list(decoder.buffers()):
        memo.setdefault(id(tensor), tensor)  # shared, not copied
    keep_alive = list(decoder.modules())  # ids in memo must stay valid during the copy
    copied = copy.deepcopy(decoder, memo)
    del keep_alive
    return copied.eval()


class MergedCache:
    """The merged view of a decoder, rebuilt only when the decoder's parameters change."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._decoder: nn.Module | None = None

    @staticmethod
    def fingerprint(decoder: nn.Module) -> tuple:
        """Storage, dtype and in-place version of every parameter: changes after any update."""
        return tuple((p.data_ptr(), p.dtype, p._version) for p in decoder.parameters())

    def get(self, decoder: nn.Module) -> nn.Module:
        key = self.fingerprint(decoder)
        if self._decoder is None or key != self._key:
            self._decoder, self._key = merged_decoder(decoder), key
        return self._decoder

    def clear(self) -> None:
        self._key = self._decoder = None
