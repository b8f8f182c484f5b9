"""Embedder wrapper (on a tiny random BERT) and the on-disk embedding cache (on a fake embedder)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from persalign.errors import DataError
from persalign.models import embedder as embedder_module
from persalign.models.bundled import BUNDLED
from persalign.models.cache import cache_dir
from persalign.models.embedder import Embedder, load_embedder
from persalign.models.embedding_cache import EmbeddingCache, cached_encode, text_hash

SENTENCES = [
    "The cat sat on the mat.",
    "Neural machine translation with attention.",
    "A dog chased the ball across the park.",
    "Parsing the syntax of long sentences is hard.",
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an empty cache, even when $PERSALIGN_CACHE is a developer's own."""
    monkeypatch.setenv("PERSALIGN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer, 32-dim BERT with the bundled MiniLM's WordPiece vocabulary."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = BUNDLED.get("all-minilm-l6-v2").source() / "vocab.txt"
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_embedder(tiny_bert: Path) -> Embedder:
    return load_embedder(tiny_bert, device="cpu")


class CountingEmbedder:
    """Deterministic fake: a unit vector seeded by each text's hash; records what it embedded."""

    def __init__(self, dim: int = 8, key: str = "fake-embedder"):
        self.dim = dim
        self.cache_key = key
        self.embedded: list[list[str]] = []

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        self.embedded.append(list(texts))
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).standard_normal(self.dim)
            rows.append(vector / np.linalg.norm(vector))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)


# --- Embedder -------------------------------------------------------------------------------------


def test_embedder_gives_unit_float32_rows_in_input_order(tiny_embedder: Embedder) -> None:
    vectors = tiny_embedder.encode(SENTENCES, batch_size=2)
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    reversed_vectors = tiny_embedder.encode(SENTENCES[::-1], batch_size=3)
    np.testing.assert_allclose(reversed_vectors[::-1], vectors, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_embedder_progress_chunks_give_the_same_vectors(
    tiny_embedder: Embedder, monkeypatch
) -> None:
    monkeypatch.setattr(embedder_module, "PROGRESS_CHUNK_BATCHES", 2)
    texts = [f"sentence number {i} " + "word " * (i % 7) for i in range(20)]
    plain = tiny_embedder.encode(texts, batch_size=4)
    chunked = tiny_embedder.encode(texts, batch_size=4, progress=True)  # 3 chunks of <= 8 texts
    np.testing.assert_allclose(chunked, plain, atol=1e-5)


def test_embedder_properties(tiny_embedder: Embedder, tiny_bert: Path) -> None:
    assert tiny_embedder.dim == 32
    assert tiny_embedder.name == str(tiny_bert.resolve())
    assert tiny_embedder.encode([]).shape == (0, 32)
    long_text = " ".join(["token"] * 60 + ["different", "ending"] * 20)
    original = tiny_embedder.max_seq_length
    full = tiny_embedder.encode([long_text])
    key = tiny_embedder.cache_key
    try:
        tiny_embedder.max_seq_length = 16
        assert tiny_embedder.max_seq_length == 16
        assert tiny_embedder.cache_key != key  # truncation changes the vectors, so the key too
        assert not np.allclose(tiny_embedder.encode([long_text]), full, atol=1e-4)
    finally:
        tiny_embedder.max_seq_length = original


def test_load_embedder_refuses_a_causal_lm_bundle() -> None:
    from persalign.errors import ConfigError

    with pytest.raises(ConfigError, match="not 'embedder'"):
        load_embedder("bundled:smollm2-135m-instruct")


# --- EmbeddingCache -------------------------------------------------------------------------------


def test_cached_encode_matches_direct_encode_and_embeds_each_text_once() -> None:
    embedder = CountingEmbedder()
    texts = ["a", "b", "a", "c"]
    first = cached_encode(embedder, texts)
    np.testing.assert_array_equal(first, CountingEmbedder().encode(texts))
    assert embedder.embedded == [["a", "b", "c"]]  # duplicates embedded once

    second = cached_encode(embedder, ["c", "d", "a", "d"])
    assert embedder.embedded[1] == ["d"]  # only the new text
    np.testing.assert_array_equal(second, CountingEmbedder().encode(["c", "d", "a", "d"]))

    third = cached_encode(embedder, texts)
    assert len(embedder.embedded) == 2  # everything cached: no call at all
    np.testing.assert_array_equal(third, first)


def test_cache_layout_is_safetensors_under_the_cache_dir() -> None:
    embedder = CountingEmbedder(dim=4, key="layout-test")
    cached_encode(embedder, ["x", "y"])
    cache = EmbeddingCache("layout-test", 4)
    assert cache.folder.parent == cache_dir() / "embeddings"
    [shard] = cache.shard_paths()
    tensors = safetensors.numpy.load_file(shard)
    assert tensors["embeddings"].dtype == np.float32 and tensors["embeddings"].shape == (2, 4)
    assert tensors["hashes"].dtype == np.uint8 and tensors["hashes"].shape == (2, 32)
    assert tensors["hashes"][0].tobytes() == text_hash("x")


def test_caches_of_different_embedders_do_not_mix() -> None:
    one, other = CountingEmbedder(key="model-one"), CountingEmbedder(key="model-two")
    cached_encode(one, ["shared text"])
    cached_encode(other, ["shared text"])
    assert other.embedded == [["shared text"]]


def test_empty_input_embeds_nothing() -> None:
    embedder = CountingEmbedder(key="empty-test")
    assert cached_encode(embedder, []).shape == (0, 8)
    assert embedder.embedded == []


def test_corrupt_shard_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    cache = EmbeddingCache("corrupt-test", 8, root=tmp_path)
    cache.folder.mkdir(parents=True)
    bad = cache.folder / "shard-0.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00not a safetensors file")
    with pytest.raises(DataError) as info:
        cached_encode(CountingEmbedder(key="corrupt-test"), ["a"], cache=cache)
    assert str(bad) in str(info.value)


def test_shard_of_the_wrong_dimension_is_a_data_error(tmp_path: Path) -> None:
    EmbeddingCache("dim-test", 4, root=tmp_path).append(
        [text_hash("a")], np.ones((1, 4), np.float32)
    )
    cache = EmbeddingCache("dim-test", 8, root=tmp_path)
    with pytest.raises(DataError, match=r"expected float32 \[n, 8\]") as info:
        cache.load()
    assert str(cache.shard_paths()[0]) in str(info.value)


def test_cached_encode_with_a_real_embedder(tiny_embedder: Embedder) -> None:
    direct = tiny_embedder.encode(SENTENCES)
    cached_encode(tiny_embedder, SENTENCES[:2])
    mixed = cached_encode(tiny_embedder, SENTENCES)
    np.testing.assert_allclose(mixed, direct, atol=1e-5)
    assert len(EmbeddingCache(tiny_embedder.cache_key, 32).shard_paths()) == 2
