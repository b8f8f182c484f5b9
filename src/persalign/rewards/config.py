"""Reward-model configuration: one strict pydantic model per method, the paper's values as defaults.

    RewardConfig(backbone="bundled:smollm2-135m-instruct", batch_size=4)
    RewardConfig(batch_sise=4)
    # Traceback (most recent call last):
    # pydantic_core._pydantic_core.ValidationError: ... Extra inputs are not permitted

``backbone_training="frozen"`` (opt-in, not the paper's) trains only the heads on cached
backbone features (``rewards/engine/features.py``).

Appendix F (TL;DR): LoRA rank 8, alpha 16, rsLoRA; backbone (LoRA) learning rate 5e-5; each
method's decoder learning rate in its own config. PRISM / Pref-LaMP configs raise latent sizes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RewardConfig(BaseModel):
    """Options shared by every reward method. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str = Field(
        "bundled:smollm2-135m-instruct",
        description="Causal LM: a hub id, a local folder, or bundled:<name>.",
    )
    device: str | None = Field(None, description="cpu, cuda, cuda:N; None picks CUDA if present.")
    dtype: str | None = Field(None, description="float32/bfloat16/float16; None: bf16 on CUDA.")
    trust_remote_code: bool = Field(False, description="Allow hub code in the backbone's repo.")
    backbone_training: Literal["lora", "frozen"] = Field(
        "lora",
        description="lora: the backbone trains through LoRA adapters (the paper, appendix F); "
        "frozen: no adapters, the backbone's features of every training response are computed "
        "once (cached on disk) and only the head and user parameters train on them (a "
        "deviation, docs/fidelity.md; methods whose reward is a likelihood refuse it).",
    )
    lora_rank: int = Field(8, ge=1, description="LoRA rank (appendix F: 8).")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha (appendix F: 16).")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    use_rslora: bool = Field(True, description="Rank-stabilised LoRA scaling (appendix F).")
    backbone_lr: float = Field(5e-5, gt=0, description="Learning rate of the LoRA weights.")
    head_lr: float = Field(1e-4, gt=0, description="Learning rate of the reward head (decoder).")
    head_weight_decay: float = Field(0.0, ge=0, description="Weight decay of the head.")
    user_lr: float = Field(1e-3, gt=0, description="Learning rate of per-user parameters.")
    batch_size: int = Field(8, ge=1, description="Preference pairs per training step.")
    epochs: int = Field(1, ge=1, description="Passes over the train users' preferences.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the gradient norm; None: off.")
    adapt_steps: int = Field(100, ge=0, description="Optimisation steps of a new user's z_k.")
    adapt_lr: float | None = Field(None, gt=0, description="Adaptation LR; None: user_lr.")
    gradient_checkpointing: bool = Field(
        True,
        description="Recompute backbone activations in backward during training (less memory, "
        "about a third more compute).",
    )
    max_tokens_per_microbatch: int | None = Field(
        8192,
        ge=16,
        description="Padded tokens per forward pass in training and feature extraction; larger "
        "batches run in micro-batches with exact gradient accumulation. None: no limit.",
    )
    shared_prompt: bool = Field(
        True,
        description="Encode each pair's prompt once, both responses after it (4D mask), in "
        "training (incl. VPL, LoRE-Alt), adaptation features and RM/prefix-accuracy evaluation; "
        "methods that cannot (shares_prompt False: P-DPO) always use two sequences.",
    )
    eval_batch_size: int = Field(16, ge=1, description="Sequences per scoring forward pass.")
    max_prompt_tokens: int = Field(512, ge=8, description="Longer prompts lose their middle.")
    max_response_tokens: int = Field(128, ge=1, description="Longer responses are cut.")
    use_chat_template: bool = Field(True, description="Render prompts with the chat template.")
    seed: int = Field(0, description="Seed for initialisation, shuffling and dropout.")
