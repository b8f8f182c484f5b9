"""In-context learning: the user's own support examples as demonstrations (paper Eq. 7).

    decoder = create_decoder("icl", policy, support=support_by_user, shots=4, seed=0)
    decoder.generate(requests)
    built = decoder.build_all(requests)      # the exact prompts it decodes from

``icl`` draws ``shots`` demonstrations from the user's support set at random (seeded by the
seed, user and prompt id); ``icl-rag`` (icl_rag.py) picks the most similar ones instead. How a
demonstration is shown (``demonstrations``):

- ``pair`` (default; Eq. 7's triples (x, y_w, y_l)): the demonstrations are prepended to the
  query prompt in its user turn, each as the request, the response the user preferred and the
  one they did not prefer, labelled (``PAIR_HEADER``, ``PAIR_EXAMPLE``, ``PAIR_QUERY``).
- ``chosen``: each demonstration is an earlier turn of the conversation, the request as a user
  turn and the preferred response as the assistant's answer; the rejected one is not shown.

``max_text_tokens`` (unset by default, as in the paper) cuts the query's and each
demonstration's request text to that many tokens (middle cut) before rendering: a run whose
policy reads a short ``max_prompt_tokens`` can show ICL as much of each prompt as zero-shot and
RGD see, so the rows differ in the demonstrations, not in how much of the prompt they read.

With no demonstration left both are the query alone, exactly the zero-shot prompt. A prompt that
does not fit ``max_prompt_tokens`` loses demonstrations first (the least relevant first), never
the query, in both renderings; every dropped demonstration is counted and reported. Decoding
itself is the shared Decoder loop with the base policy: ``prepare`` renders the demonstrations
into each request's ``prompt_ids``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

from pydantic import Field

from persalign.decoding.base import Decoder, DecodeSettings, GenerationRequest, register_decoder
from persalign.decoding.policy import Policy
from persalign.models.encoding import DEFAULT_MAX_PROMPT_TOKENS, PromptFormatter
from persalign.seeding import seeded_rng
from persalign.types import Preference

log = logging.getLogger(__name__)
CUT_MARK = " ... "  # where max_text_tokens cut the middle of a request text


class IclSettings(DecodeSettings):
    """ICL options."""

    shots: int = Field(4, ge=0, description="Demonstrations per prompt.")
    retrieval: str = Field(
        "embedding", pattern="^(embedding|bm25)$", description="icl-rag similarity."
    )
    embedder: str = Field("bundled:all-minilm-l6-v2", description="icl-rag embedder.")
    max_prompt_tokens: int = Field(
        DEFAULT_MAX_PROMPT_TOKENS, ge=16, description="Context budget for the prompt."
    )
    max_text_tokens: int | None = Field(
        None,
        ge=8,
        description="Cut the query's and each demonstration's request text to this many "
        "tokens (middle cut: half from the start, half from the end) before rendering; None: "
        "whole texts (the paper).",
    )
    demonstrations: str = Field(
        "pair",
        pattern="^(pair|chosen)$",
        description="pair: each demonstration shows the request, the preferred and the not "
        "preferred response (Eq. 7's triples); chosen: the request and the preferred one only.",
    )


RENDERINGS = ("pair", "chosen")
PAIR_HEADER = (
    "Earlier requests from this user, each with the response the user preferred and the "
    "response the user did not prefer:"
)
PAIR_EXAMPLE = (
    "### Example {number}\nRequest:\n{prompt}\n\nPreferred response:\n{chosen}\n\n"
    "Not preferred response:\n{rejected}"
)
PAIR_QUERY = "### New request\n{prompt}"


def icl_messages(demos: Sequence[Preference], prompt: str, rendering: str) -> list[dict[str, str]]:
    """The conversation of ``prompt`` with ``demos`` (least relevant first) in ``rendering``."""
    if rendering not in RENDERINGS:
        raise ValueError(f"rendering must be one of {', '.join(RENDERINGS)}, got {rendering!r}")
    if not demos:
        return [{"role": "user", "content": prompt}]
    if rendering == "chosen":
        messages = []
        for demo in demos:
            messages += [
                {"role": "user", "content": demo.prompt},
                {"role": "assistant", "content": demo.chosen},
            ]
        return [*messages, {"role": "user", "content": prompt}]
    blocks = [
        PAIR_EXAMPLE.format(
            number=i, prompt=demo.prompt, chosen=demo.chosen, rejected=demo.rejected
        )
        for i, demo in enumerate(demos, start=1)
    ]
    content = "\n\n".join([PAIR_HEADER, *blocks, PAIR_QUERY.format(prompt=prompt)])
    return [{"role": "user", "content": content}]


def icl_prompt_ids(
    formatter: PromptFormatter,
    demos: Sequence[Preference],
    prompt: str,
    max_prompt_tokens: int,
    rendering: str = "pair",
) -> tuple[list[int], int, int]:
    """Policy prompt ids of ``prompt`` with ``demos`` (least relevant first) in ``rendering``
    ("pair" or "chosen", see the module docstring).

    Returns (ids, demonstrations dropped to fit ``max_prompt_tokens``, 1 if the query itself
    had to be cut else 0). Demonstrations are dropped from the front (least relevant first).
    """
    demos, dropped = list(demos), 0
    while True:
        ids = formatter.messages_ids(icl_messages(demos, prompt, rendering))
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
    seeded = True  # the demonstrations are a seeded draw
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
        self.requested_demonstrations = 0
        self.dropped_demonstrations = 0
        self.truncated_queries = 0
        self.bare_prompts = 0  # prompts left with no demonstration (the zero-shot prompt)
        self.cut_texts = 0  # query and demonstration texts cut to max_text_tokens

    def demonstrations(self, request: GenerationRequest) -> list[Preference]:
        """Demonstrations for one request, least relevant first."""
        pool = [p for p in self.support.get(request.user, ()) if p.prompt != request.prompt]
        rng = seeded_rng("icl", self.settings.seed, request.user, request.id)
        return rng.sample(pool, min(self.settings.shots, len(pool)))

    def cut(self, text: str) -> str:
        """``text`` cut to ``max_text_tokens`` policy tokens (middle cut: the characters of
        the first and the last half of them, joined by CUT_MARK), counted."""
        limit = self.settings.max_text_tokens
        if limit is None:
            return text
        spans = self.policy.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]  # [(start, end)] of each token in ``text``
        if len(spans) <= limit:
            return text
        self.cut_texts += 1
        head, tail = limit // 2, limit - limit // 2
        return text[: spans[head - 1][1]].rstrip() + CUT_MARK + text[spans[-tail][0] :].lstrip()

    def build(self, request: GenerationRequest) -> GenerationRequest:
        """The request with its demonstrations rendered in; demos dropped first to fit."""
        demos = self.demonstrations(request)
        shown = [replace(d, prompt=self.cut(d.prompt)) for d in demos]
        ids, dropped, truncated = icl_prompt_ids(
            self.policy.formatter,
            shown,
            self.cut(request.prompt),
            self.settings.max_prompt_tokens,
            self.settings.demonstrations,
        )
        self.requested_demonstrations += len(demos)
        self.bare_prompts += dropped == len(demos)
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

    def demonstration_fit(self, requests: Sequence[GenerationRequest]) -> dict[str, int]:
        """How the demonstrations of ``requests`` fit ``max_prompt_tokens`` (the cell's
        ``demonstrations`` block): ``requested`` (drawn from the support sets), ``shown``,
        ``dropped`` to fit, ``truncated_queries`` and ``prompts``; ``prompts_without`` counts
        the prompts left with no demonstration at all (the zero-shot prompt). Built afresh (pure
        tokenization), so a resumed generation still reports every prompt."""
        self.requested_demonstrations = self.dropped_demonstrations = 0
        self.truncated_queries = self.bare_prompts = self.cut_texts = 0
        self.build_all(requests)
        return {
            "prompts": len(requests),
            "requested": self.requested_demonstrations,
            "shown": self.requested_demonstrations - self.dropped_demonstrations,
            "dropped": self.dropped_demonstrations,
            "truncated_queries": self.truncated_queries,
            "prompts_without": self.bare_prompts,
            "cut_texts": self.cut_texts,
            "max_prompt_tokens": self.settings.max_prompt_tokens,
            "max_text_tokens": self.settings.max_text_tokens,
        }

    def finish(self) -> None:
        if self.dropped_demonstrations or self.truncated_queries:
            log.warning(
                "%s: dropped %d demonstrations and cut %d queries to fit %d prompt tokens",
                self.name,
                self.dropped_demonstrations,
                self.truncated_queries,
                self.settings.max_prompt_tokens,
            )
