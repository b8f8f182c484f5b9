"""In-context learning: the user's own support examples as demonstrations (paper Eq. 7).

    decoder = create_decoder("icl", policy, support=support_by_user, shots=4, seed=0)
    decoder.generate(requests)
    built = decoder.build_all(requests)      # the exact prompts it decodes from

``icl`` draws ``shots`` demonstrations (prompt, the user's chosen response) from the user's
support set at random (seeded by the seed, user and prompt id); ``icl-rag`` (icl_rag.py)
picks the most similar ones instead. Chat models see the demonstrations as earlier turns of the
conversation. A prompt that does not fit ``max_prompt_tokens`` loses demonstrations first (the
least relevant first), never the query; every dropped demonstration is counted and reported.
Decoding itself is the shared Decoder loop with the base policy: ``prepare`` renders the
demonstrations into each request's ``prompt_ids``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from pydantic import Field

from persalign.data.splits import seeded_rng
from persalign.decoding.base import Decoder, DecodeSettings, GenerationRequest, register_decoder
from persalign.decoding.policy import Policy
from persalign.models.encoding import PromptFormatter
from persalign.types import Preference

log = logging.getLogger(__name__)


class IclSettings(DecodeSettings):
    """ICL options."""

    shots: int = Field(4, ge=0, description="Demonstrations per prompt.")
    retrieval: str = Field(
        "embedding", pattern="^(embedding|bm25)$", description="icl-rag similarity."
    )
    embedder: str = Field("bundled:all-minilm-l6-v2", description="icl-rag embedder.")
    max_prompt_tokens: int = Field(2048, ge=16, description="Context budget for the prompt.")


def icl_prompt_ids(
    formatter: PromptFormatter,
    demos: Sequence[Preference],
    prompt: str,
    max_prompt_tokens: int,
) -> tuple[list[int], int, int]:
    """Policy prompt ids with ``demos`` (least relevant first) as earlier conversation turns.

    Returns (ids, demonstrations dropped to fit ``max_prompt_tokens``, 1 if the query itself
    had to be cut else 0). Demonstrations are dropped from the front (least relevant first).
    """
    demos, dropped = list(demos), 0
    while True:
        messages = []
        for demo in demos:
            messages += [
                {"role": "user", "content": demo.prompt},
                {"role": "assistant", "content": demo.chosen},
            ]
        messages.append({"role": "user", "content": prompt})
        ids = formatter.messages_ids(messages)
        if len(ids) <= max_prompt_tokens:
            return ids, dropped, 0
        if not demos:  # the query alone is too long: cut its middle, counted
            return formatter.prompt_ids(prompt)[:max_prompt_tokens], dropped, 1
        demos = demos[1:]
        dropped += 1


@register_decoder("icl", summary="In-context learning with random support demonstrations")
class IclDecoder(Decoder):
    """The base policy conditioned on random demonstrations from the user's support set."""

    settings_class = IclSettings
    needs_support = True
    settings: IclSettings
    support: Mapping[str, Sequence[Preference]]

    def __init__(
        self,
        policy: Policy,
        reward_model=None,
        settings: IclSettings | None = None,
        support: Mapping[str, Sequence[Preference]] | None = None,
    ):
        super().__init__(policy, reward_model, settings, support)
        self.dropped_demonstrations = 0
        self.truncated_queries = 0

    def demonstrations(self, request: GenerationRequest) -> list[Preference]:
        """Demonstrations for one request, least relevant first."""
        pool = [p for p in self.support.get(request.user, ()) if p.prompt != request.prompt]
        rng = seeded_rng("icl", self.settings.seed, request.user, request.id)
        return rng.sample(pool, min(self.settings.shots, len(pool)))

    def build(self, request: GenerationRequest) -> GenerationRequest:
        """The request with its demonstrations rendered in; demos dropped first to fit."""
        ids, dropped, truncated = icl_prompt_ids(
            self.policy.formatter,
            self.demonstrations(request),
            request.prompt,
            self.settings.max_prompt_tokens,
        )
        self.dropped_demonstrations += dropped
        self.truncated_queries += truncated
        return GenerationRequest(request.id, request.user, request.prompt, tuple(ids))

    def index(self, requests: Sequence[GenerationRequest]) -> None:
        """Work done once for a set of requests before ``build`` (icl-rag: embeddings)."""

    def build_all(self, requests: Sequence[GenerationRequest]) -> list[GenerationRequest]:
        """Every request with its demonstrations: the exact prompts generation decodes from
        (policy accuracy's ICL scorer reuses them)."""
        self.index(requests)
        return [self.build(r) for r in requests]

    def prepare(self, requests: list[GenerationRequest]) -> list[GenerationRequest]:
        return self.build_all(requests)

    def finish(self) -> None:
        if self.dropped_demonstrations or self.truncated_queries:
            log.warning(
                "%s: dropped %d demonstrations and cut %d queries to fit %d prompt tokens",
                self.name,
                self.dropped_demonstrations,
                self.truncated_queries,
                self.settings.max_prompt_tokens,
            )
