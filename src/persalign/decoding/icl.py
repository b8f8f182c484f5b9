"""In-context learning: the user's own support examples as demonstrations (paper Eq. 7).

    decoder = IclDecoder(policy, support=support_by_user, settings=IclSettings(shots=4))
    rag = IclRagDecoder(policy, support=support_by_user, settings=IclSettings(shots=4))

``icl`` draws ``shots`` demonstrations (prompt, the user's chosen response) from the user's
support set at random (seeded by the seed, user and prompt id). ``icl-rag`` takes the ``shots``
support items whose prompts are most similar to the query prompt (embedder cosine, or BM25),
most similar last, nearest the query. Chat models see the demonstrations as earlier turns of the
conversation. A prompt that does not fit ``max_prompt_tokens`` loses demonstrations first (the
least relevant first), never the query; every dropped demonstration is counted and reported.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import Field

from persalign.data.splits import seeded_rng
from persalign.decoding.base import (
    DECODERS,
    DecodeSettings,
    Generation,
    GenerationRequest,
    PolicyChooser,
    decode,
)
from persalign.decoding.policy import Policy
from persalign.errors import ConfigError
from persalign.logs import track
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


def bm25_scores(query: str, documents: Sequence[str], k1: float = 1.5, b: float = 0.75):
    """Okapi BM25 of ``query`` against each document (lower-cased word tokens)."""
    tokenize = lambda text: re.findall(r"\w+", text.lower())  # noqa: E731
    docs = [tokenize(d) for d in documents]
    mean_len = sum(map(len, docs)) / max(1, len(docs))
    df = Counter(term for doc in docs for term in set(doc))
    scores = []
    for doc in docs:
        tf = Counter(doc)
        score = 0.0
        for term in tokenize(query):
            if term not in tf:
                continue
            idf = math.log(1 + (len(docs) - df[term] + 0.5) / (df[term] + 0.5))
            norm = tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(doc) / mean_len))
            score += idf * norm
        scores.append(score)
    return np.array(scores)


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


class IclDecoder:
    """The base policy conditioned on random demonstrations from the user's support set."""

    name = "icl"

    def __init__(
        self,
        policy: Policy,
        reward_model=None,
        settings: IclSettings | None = None,
        support: Mapping[str, Sequence[Preference]] | None = None,
    ):
        if support is None:
            raise ConfigError(f"the {self.name} decoder needs the users' support sets")
        self.policy = policy
        self.settings = settings or IclSettings()
        self.support = support
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

    def prepare(self, requests: Sequence[GenerationRequest]) -> None:
        """Work done once for a set of requests before ``build`` (icl-rag: embeddings)."""

    def build_all(self, requests: Sequence[GenerationRequest]) -> list[GenerationRequest]:
        """Every request with its demonstrations: the exact prompts generation decodes from
        (policy accuracy's ICL scorer reuses them)."""
        self.prepare(requests)
        return [self.build(r) for r in requests]

    def generate(
        self, requests: Sequence[GenerationRequest], progress: bool = True
    ) -> list[Generation]:
        built = self.build_all(requests)
        out: list[Generation] = []
        size = self.settings.batch_size
        batches = [built[i : i + size] for i in range(0, len(built), size)]
        for batch in track(batches, f"{self.name} decoding", show=progress):
            out += decode(self.policy, batch, PolicyChooser(self.settings), self.settings)
        if self.dropped_demonstrations or self.truncated_queries:
            log.warning(
                "%s: dropped %d demonstrations and cut %d queries to fit %d prompt tokens",
                self.name,
                self.dropped_demonstrations,
                self.truncated_queries,
                self.settings.max_prompt_tokens,
            )
        return out


class IclRagDecoder(IclDecoder):
    """ICL with the most similar support items as demonstrations (most similar last)."""

    name = "icl-rag"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._vectors: dict[str, np.ndarray] = {}

    def prepare(self, requests: Sequence[GenerationRequest]) -> None:
        if self.settings.retrieval == "embedding":  # embed every text once, up front
            from persalign.models import cached_encode, load_embedder

            texts = sorted(
                {r.prompt for r in requests}
                | {p.prompt for r in requests for p in self.support.get(r.user, ())}
            )
            vectors = cached_encode(load_embedder(self.settings.embedder), texts)
            self._vectors = dict(zip(texts, vectors, strict=True))

    def similarities(self, query: str, prompts: list[str]) -> np.ndarray:
        if self.settings.retrieval == "bm25":
            return bm25_scores(query, prompts)
        return np.array([float(self._vectors[p] @ self._vectors[query]) for p in prompts])

    def demonstrations(self, request: GenerationRequest) -> list[Preference]:
        pool = [p for p in self.support.get(request.user, ()) if p.prompt != request.prompt]
        if not pool or self.settings.shots == 0:
            return []
        sims = self.similarities(request.prompt, [p.prompt for p in pool])
        order = sorted(range(len(pool)), key=lambda i: (-sims[i], pool[i].id))
        best = order[: self.settings.shots]
        return [pool[i] for i in reversed(best)]  # least similar first, most similar last


DECODERS.register("icl", summary="In-context learning with random support demonstrations")(
    IclDecoder
)
DECODERS.register("icl-rag", summary="ICL with the most similar support items (RAG)")(IclRagDecoder)
