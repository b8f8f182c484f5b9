"""The reward models' backbone: a causal LM with LoRA adapters (peft), run with or without a cache.

    backbone = Backbone.load("bundled:smollm2-135m-instruct", LoraSettings())
    hidden, cache = backbone.hidden(input_ids, attention_mask, position_ids)   # [B, T, H]
    logits, cache = backbone.logits(input_ids, attention_mask, position_ids)   # [B, T, V]

Appendix F: LoRA rank 8, alpha 16, rsLoRA, on every linear layer of the decoder (not the LM
head). Only the LoRA weights train; the base weights stay frozen. ``attention_mask`` may be the
usual 2D [B, T] padding mask or a 4D additive mask [B, 1, T, past + T] (0 = attend), which is how
reward-guided decoding scores k candidate tokens at one position against a shared cache, and how
training encodes a pair's two responses after one copy of its prompt (``pair_batching``).
``lora=None`` (``backbone_training="frozen"``) keeps the plain model, no adapters.
``set_gradient_checkpointing(True)`` trades a second forward per layer for activation memory.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache

from persalign.models import load_causal_lm
from persalign.models.cache import weights_hash
from persalign.rewards.engine.inference import MergedCache


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    rslora: bool = True
    target_modules: str | tuple[str, ...] = "all-linear"


class Backbone(nn.Module):
    """A (LoRA-wrapped) causal LM exposing hidden states and logits for every position."""

    def __init__(self, model: PreTrainedModel, lora: LoraSettings | None):
        super().__init__()
        for param in model.parameters():
            param.requires_grad_(False)
        if lora is not None:
            config = LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                use_rslora=lora.rslora,
                target_modules=(
                    lora.target_modules
                    if isinstance(lora.target_modules, str)
                    else list(lora.target_modules)
                ),
                bias="none",
            )
            with warnings.catch_warnings():  # peft reads transformers' deprecated alias
                warnings.filterwarnings("ignore", message="`is_gradient_checkpointing`")
                model = get_peft_model(model, config)
        self.model = model
        self.hidden_size: int = self.base.config.hidden_size
        self._merged = MergedCache()  # not a submodule: never saved, never trained
        self._hash: tuple[tuple, str] | None = None  # (parameter fingerprint, weights hash)

    @property
    def base(self) -> PreTrainedModel:
        """The (LoRA-injected) transformers model, without the peft wrapper."""
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    @property
    def decoder(self) -> nn.Module:
        """The decoder stack (e.g. LlamaModel): hidden states without the LM head."""
        return self.base.get_decoder()

    @property
    def lm_head(self) -> nn.Module:
        return self.base.get_output_embeddings()

    @classmethod
    def load(
        cls,
        spec: str,
        lora: LoraSettings | None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
    ) -> Backbone:
        model = load_causal_lm(
            spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code
        )
        return cls(model, lora)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def hidden(
        self,
        input_ids: torch.Tensor | None,  # [B, T]
        attention_mask: torch.Tensor,  # [B, T] or [B, 1, T, past + T]
        position_ids: torch.Tensor,  # [B, T]
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,  # [B, T, H], replaces input_ids
    ) -> tuple[torch.Tensor, Cache | None]:
        """Last-layer hidden states [B, T, H] and the updated cache (when one is passed)."""
        return self._run(
            self.decoder, input_ids, attention_mask, position_ids, cache, inputs_embeds
        )

    @torch.no_grad()
    def decode_hidden(
        self,
        input_ids: torch.Tensor | None,  # [B, T]
        attention_mask: torch.Tensor,  # [B, T] or [B, 1, T, past + T]
        position_ids: torch.Tensor,  # [B, T]
        cache: Cache | None = None,
    ) -> tuple[torch.Tensor, Cache | None]:
        """``hidden`` on the merged inference view (no gradients): the decoding hot path."""
        merged = self._merged.get(self.decoder)
        return self._run(merged, input_ids, attention_mask, position_ids, cache, None)

    @staticmethod
    def _run(decoder, input_ids, attention_mask, position_ids, cache, inputs_embeds):
        out = decoder(
            input_ids=None if inputs_embeds is not None else input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
        )
        return out.last_hidden_state, out.cache

    def logits(self, *args: torch.Tensor | Cache | None, **kwargs: torch.Tensor | Cache | None):
        """Next-token logits [B, T, V] (float32) and the cache; same arguments as ``hidden``."""
        hidden, cache = self.hidden(*args, **kwargs)
        return self.lm_head(hidden).float(), cache

    def weights_hash(self) -> str:
        """``models.cache.weights_hash`` of the model (LoRA included when present), computed
        again only after a parameter changed: equal to the policy's for a backbone without
        adapters loaded from the same weights."""
        key = MergedCache.fingerprint(self.model)
        if self._hash is None or self._hash[0] != key:
            self._hash = (key, weights_hash(self.model))
        return self._hash[1]

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings [B, T, H] of ``input_ids`` (for soft-token methods)."""
        return self.model.get_input_embeddings()(input_ids)

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.model.config)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute each decoder layer's activations in backward instead of keeping them
        (non-reentrant, so LoRA inputs need no ``requires_grad``); applies in train mode only."""
        base = self.base
        if not getattr(base, "supports_gradient_checkpointing", False):
            return
        # transformers >= 5.2x renamed gradient_* to activation_checkpointing_*
        if not enabled:
            disable = getattr(base, "activation_checkpointing_disable", None)
            (disable or base.gradient_checkpointing_disable)()
            return
        enable = getattr(base, "activation_checkpointing_enable", None)
        (enable or base.gradient_checkpointing_enable)({"use_reentrant": False})
        if hasattr(base, "_require_grads_hook"):  # only reentrant checkpoints need it
            base.disable_input_require_grads()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]
