"""ICL-RAG: in-context learning with the user's most similar support examples (retrieval).

    decoder = create_decoder("icl-rag", policy, support=support_by_user, shots=4)
    decoder = create_decoder("icl-rag", policy, support=support_by_user, retrieval="bm25")
    decoder.generate(requests)

Like ``icl`` (icl.py: same settings, same prompt rendering and context budget), but the
demonstrations are the ``shots`` support items whose prompts are most similar to the query
prompt: embedder cosine (every text embedded once per ``generate``, through the embedding
cache) or Okapi BM25. They are ordered most similar last, nearest the query, so the least
similar is the first dropped when the prompt does not fit.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from persalign.decoding.base import GenerationRequest, register_decoder
from persalign.decoding.icl import IclDecoder
from persalign.models import cached_encode, load_embedder
from persalign.types import Preference


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


@register_decoder("icl-rag", summary="ICL with the most similar support items (RAG)")
class IclRagDecoder(IclDecoder):
    """ICL with the most similar support items as demonstrations (most similar last)."""

    servable = True
    seeded = False  # the most similar items: no draw

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._vectors: dict[str, np.ndarray] = {}
        self._embedder = None  # loaded on the first index() that has something to embed

    def index(self, requests: Sequence[GenerationRequest]) -> None:
        """Embed every query and support prompt once (embedding retrieval): the embedder is
        loaded once per decoder and texts embedded by an earlier call are not embedded again."""
        if self.settings.retrieval == "embedding":
            texts = sorted(
                {r.prompt for r in requests}
                | {p.prompt for r in requests for p in self.support.get(r.user, ())}
            )
            missing = [t for t in texts if t not in self._vectors]
            if not missing:
                return
            if self._embedder is None:
                self._embedder = load_embedder(self.settings.embedder)
            vectors = cached_encode(self._embedder, missing)
            self._vectors.update(zip(missing, vectors, strict=True))

    def similarities(self, query: str, prompts: list[str]) -> np.ndarray:
        """[len(prompts)] similarity of each prompt to ``query``."""
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
