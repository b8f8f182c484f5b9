"""ICL-RAG's index: the embedder loads once per decoder and each text is embedded once, however
many times the cell asks (generation batches, policy accuracy, ground-truth rank), and retrieval
still picks the most similar support item (a naive dot-product argmax over the same vectors)."""

from __future__ import annotations

import numpy as np
import pytest

import persalign.decoding.icl_rag as icl_rag
from persalign.decoding import GenerationRequest, Policy, create_decoder
from persalign.types import Preference

TOPICS = ["sun", "rain", "snow", "wind", "fog"]


class CountingEmbedder:
    """A deterministic fake embedder: one-hot on the first topic word a text contains."""

    cache_key = "test-counting-embedder"
    dim = len(TOPICS)

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.encoded.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            hits = [i for i, t in enumerate(TOPICS) if t in text]
            out[row, hits[0] if hits else 0] = 1.0
        return out


@pytest.fixture(scope="module")
def policy(tiny_lm: str) -> Policy:
    return Policy.load(tiny_lm, device="cpu")


def test_the_embedder_loads_once_and_each_text_is_embedded_once(policy, monkeypatch):
    embedder, loads = CountingEmbedder(), []
    monkeypatch.setattr(icl_rag, "load_embedder", lambda spec, **kw: loads.append(spec) or embedder)
    support = {
        "u": [
            Preference(f"s{i}", "u", f"a note on {t}", f"{t} yes", f"{t} no")
            for i, t in enumerate(TOPICS)
        ]
    }
    requests = [
        GenerationRequest(f"q{i}", "u", f"more {t} today") for i, t in enumerate(TOPICS[:3])
    ]
    decoder = create_decoder(
        "icl-rag", policy, support=support, shots=1, retrieval="embedding", max_new_tokens=2
    )
    for _ in range(3):  # generation batches and the metrics call build_all again and again
        decoder.build_all(requests)
    decoder.build_all(requests[:1])
    assert len(loads) == 1
    unique = {r.prompt for r in requests} | {p.prompt for p in support["u"]}
    assert sorted(embedder.encoded) == sorted(unique)  # every text once, none twice
    for request in requests:  # retrieval: the naive argmax of the same dot products
        pool = support["u"]
        sims = [float(decoder._vectors[p.prompt] @ decoder._vectors[request.prompt]) for p in pool]
        best = pool[int(np.argmax(sims))]
        assert decoder.demonstrations(request) == [best]
