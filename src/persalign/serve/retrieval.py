"""icl-rag for the server: the embedder loaded once, support prompts embedded at onboarding.

    rag = ServedIclRag(policy, settings=IclSettings(shots=4), support=support)  # loads it once
    rag.embed_support("alice", prefs)     # onboarding (the adaptation worker): her prompts
    demos = rag.demonstrations(request)   # per request: embeds the query only; no lock, no file
    rag.forget("alice")                   # deleted: her prompts' vectors go too

The decoder's own ``index`` embeds every query and support prompt through the embedding cache
on disk, once per ``generate``; a server calls it once per request, so it would write a cache
file per request and its shared vectors would need a lock. Here the vectors of a user's support
prompts are kept in memory per user (replaced whole, so readers never see a half-built one),
a request embeds its query alone (plus any support prompt not embedded yet), and nothing is
written. The ranking is the decoder's (``IclRagDecoder.demonstrations``); bm25 needs no
embedder and is unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from persalign.decoding.base import GenerationRequest
from persalign.decoding.icl_rag import IclRagDecoder
from persalign.models import load_embedder
from persalign.types import Preference


class ServedIclRag(IclRagDecoder):
    """icl-rag whose embeddings live in memory per user (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        embedding = self.settings.retrieval == "embedding"
        self.embedder = load_embedder(self.settings.embedder) if embedding else None
        self.by_user: dict[str, dict[str, np.ndarray]] = {}
        self._local = threading.local()  # the user whose request is being built (per thread)

    def embed_support(self, user: str, prefs: Sequence[Preference] | None) -> None:
        """Embed ``user``'s support prompts (None: forget them)."""
        if prefs is None:
            self.forget(user)
            return
        if self.embedder is None:
            return
        texts = sorted({p.prompt for p in prefs})
        self.by_user[user] = dict(zip(texts, self.embedder.encode(texts), strict=True))

    def forget(self, user: str) -> None:
        self.by_user.pop(user, None)

    def index(self, requests: Sequence[GenerationRequest]) -> None:
        """Nothing per request: support vectors are made at onboarding."""

    def demonstrations(self, request: GenerationRequest) -> list[Preference]:
        self._local.user = request.user
        return super().demonstrations(request)

    def similarities(self, query: str, prompts: list[str]) -> np.ndarray:
        """[len(prompts)] cosine of each support prompt to ``query`` (the query embedded now)."""
        if self.embedder is None:
            return super().similarities(query, prompts)
        known = self.by_user.get(getattr(self._local, "user", ""), {})
        missing = sorted({p for p in prompts if p not in known})
        vectors = self.embedder.encode([query, *missing])  # [1 + M, dim], unit norm
        local = {**known, **dict(zip(missing, vectors[1:], strict=True))}
        return np.array([float(local[p] @ vectors[0]) for p in prompts])
