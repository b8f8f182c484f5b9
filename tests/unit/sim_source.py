"""A small built benchmark for the sim builder to draw from (imported by the sim tests)."""

from __future__ import annotations

from pathlib import Path

from persalign.data.benchmark_folder import write_benchmark
from persalign.types import Preference

TOPICS = [
    "neural machine translation", "sentiment analysis", "question answering", "summarization",
    "speech recognition", "dialogue systems", "dependency parsing", "entity recognition",
    "text classification", "language model pretraining", "retrieval", "code generation",
]  # fmt: skip


def responses(i: int, topic: str) -> list[str]:
    """Four titles of different styles for one abstract."""
    return [
        topic.title(),
        f"NLP for {topic}: a novel and powerful approach",
        f"Can we improve {topic}?",
        f"My {i + 2} lessons on {topic} with BERT and GPT",
    ]


def write_source(path: Path, *, same: bool = False) -> Path:
    """Three users labelling pairs of the four titles of 12 abstracts; ``same``: each prompt
    has one response, the chosen and rejected of every preference (a source without pairs)."""
    prefs = []
    for i, topic in enumerate(TOPICS):
        prompt = f"Generate a title for: We study {topic} with a new model on 3 datasets."
        rs = responses(i, topic)
        for u in range(3):
            a, b = rs[u], rs[(u + 1 + i) % 4] if (u + 1 + i) % 4 != u else rs[3 - u]
            a, b = (rs[0], rs[0]) if same else (a, b)
            prefs.append(Preference(f"u{u}/{i}", f"u{u}", prompt, a, b))
    train = [p for p in prefs if p.user != "u2"]
    adapt = [p for p in prefs if p.user == "u2"]
    write_benchmark(
        path, train=train, support=adapt[:6], query=adapt[6:], manifest={"name": "source"}
    )
    return path
