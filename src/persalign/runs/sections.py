"""The sections of an experiment config (strict pydantic models; see config.py and docs/runs.md).

    PolicyConfig(spec="Qwen/Qwen2.5-7B-Instruct", params_m=7000).label()
    # '7B'
    DecodingConfig(max_new_tokns=3)
    # Traceback (most recent call last):
    # pydantic_core._pydantic_core.ValidationError: ... Extra inputs are not permitted

Every field has a description; an unknown key is an error.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from persalign.data.registry import BuildFields, BuildOptions
from persalign.models.encoding import DEFAULT_MAX_PROMPT_TOKENS


class Strict(BaseModel):
    """Unknown keys are errors; values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BenchmarkConfig(BuildFields):
    """A benchmark: a built folder (``path``), or build options for ``persalign.data`` builders
    (every field of ``BuildOptions``, declared there once)."""

    dataset: str | None = Field(
        None, description="Builder (persalign ls datasets); default: this entry's key."
    )
    path: str | None = Field(
        None, description="A built benchmark folder; when set, no build option may be given."
    )

    @model_validator(mode="after")
    def _path_or_build(self) -> BenchmarkConfig:
        if self.path is not None:
            extra = sorted(self.model_fields_set - {"path", "dataset"})
            if extra:
                raise ValueError(f"'path' names a built benchmark; drop the build options {extra}")
        return self

    def build_options(self) -> BuildOptions:
        """The persalign.data BuildOptions (every field but dataset and path)."""
        return BuildOptions(**self.model_dump(exclude={"dataset", "path"}))


class RewardSection(Strict):
    """Reward models: the backbone, resources, and RewardConfig fields shared by every method."""

    backbone: str = Field(
        "bundled:smollm2-135m-instruct", description="Backbone: hub id, folder or bundled:<name>."
    )
    gpus: float = Field(0, ge=0, description="GPUs per training task (ray backend).")
    settings: dict[str, Any] = Field(
        {}, description="RewardConfig fields for every method (e.g. max_steps, batch_size)."
    )


class PolicyConfig(Strict):
    """A base policy (one scale)."""

    spec: str = Field(description="Model: hub id, local folder or bundled:<name>.")
    params_m: float = Field(gt=0, description="Parameters in millions (orders the scales).")
    scale: str | None = Field(None, description="Scale label in tables; default from params_m.")
    gpus: float = Field(0, ge=0, description="GPUs per cell of this policy (ray backend).")
    device: str | None = Field(None, description="cpu, cuda, cuda:N; null: CUDA if present.")
    dtype: str | None = Field(None, description="float32/bfloat16/float16; null: automatic.")
    max_prompt_tokens: int = Field(
        DEFAULT_MAX_PROMPT_TOKENS,
        ge=16,
        description="Longer prompts lose their middle (policy and its scorers).",
    )
    trust_remote_code: bool = Field(False, description="Allow hub code in the model's repo.")

    def label(self) -> str:
        if self.scale:
            return self.scale
        value = self.params_m
        return f"{value / 1000:g}B" if value >= 1000 else f"{value:g}M"


class BaselinesConfig(Strict):
    """Baselines run for every (benchmark, policy, seed)."""

    zero_shot: bool = Field(True, description="Zero-shot cell (the win-rate reference).")
    icl: list[int] = Field([], description="Shot counts of ICL (random support demos).")
    icl_rag: list[int] = Field([], description="Shot counts of ICL-RAG (retrieved demos).")
    retrieval: Literal["embedding", "bm25"] = Field("embedding", description="ICL-RAG retrieval.")
    embedder: str = Field("bundled:all-minilm-l6-v2", description="ICL-RAG embedder.")
    max_prompt_tokens: int = Field(
        DEFAULT_MAX_PROMPT_TOKENS,
        ge=16,
        description="ICL context budget; demonstrations are dropped to fit.",
    )
    demonstrations: Literal["pair", "chosen"] = Field(
        "pair",
        description="How ICL and ICL-RAG show a demonstration (generation and the ICL scorer): "
        "pair: request, preferred and not preferred response (Eq. 7); chosen: preferred only.",
    )
    max_text_tokens: int | None = Field(
        None,
        ge=8,
        description="Cut the query's and each demonstration's request text to this many tokens "
        "(middle cut) before rendering, e.g. to show ICL as much of a prompt as a policy with a "
        "small max_prompt_tokens sees; unset: whole texts (the paper).",
    )

    decoders: dict[str, dict[str, Any] | None] = Field(
        {},
        description="More baseline rows by label: {decoder: a registered decoder that needs no "
        "reward model (default: the label), any field of its settings}.",
    )

    @field_validator("icl", "icl_rag")
    @classmethod
    def _shots(cls, value: list[int]) -> list[int]:
        if any(s < 1 for s in value) or len(set(value)) != len(value):
            raise ValueError("shot counts must be distinct positive integers")
        return value


class DecodingConfig(Strict):
    """Generation for the adaptation users' query prompts."""

    generate: bool = Field(
        True, description="Generate (behavioural metrics, win rate, perplexity); off: ranking only."
    )
    max_new_tokens: int = Field(64, ge=1, description="Hard cap on generated tokens.")
    stop: list[str] = Field([], description="Stop strings (a newline for titles).")
    k: int = Field(10, ge=1, description="ARGS: the policy's top-k candidates per step.")
    batch_size: int = Field(8, ge=1, description="Prompts decoded together.")
    mode: Literal["greedy", "sample"] = Field("greedy", description="greedy or sample (seeded).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")


class LambdaConfig(Strict):
    """Choosing ARGS's lambda per reward model and policy (appendix F.2)."""

    grid: list[float] = Field(
        [0.0, 0.5, 1.0, 2.0, 4.0], min_length=1, description="Candidate lambda values."
    )
    objective: Literal["policy-accuracy", "harmonic"] = Field(
        "policy-accuracy",
        description="policy-accuracy (TL;DR, PRISM) or harmonic mean of ROUGE-1, 1/ppl and "
        "policy accuracy (Pref-LaMP).",
    )
    heldout_per_user: int = Field(
        1, ge=0, description="Train users' items held out of training for the selection."
    )
    heldout_users: int | None = Field(
        None, ge=1, description="Use at most this many train users' held-out items (seeded)."
    )


class ReportConfig(Strict):
    """What ``persalign report`` computes from the cells (no job depends on it)."""

    correlation_units: Literal["methods", "method-seed", "users"] = Field(
        "methods",
        description="Points of the correlation tables and Fig. 1: one per reward method (mean "
        "over seeds, the paper's), per (method, seed), or per (method, user) (mean over seeds).",
    )
    selection_metric: str = Field(
        "rm_accuracy",
        description="The report column (higher is better) that `persalign select` picks the "
        "model to deploy and its lambda by, per benchmark and policy (`persalign ls metrics`).",
    )
