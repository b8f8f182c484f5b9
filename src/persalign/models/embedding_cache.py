"""An on-disk cache of text embeddings, so a corpus is embedded once per embedder.

    embedder = load_embedder("bundled:all-minilm-l6-v2")
    vectors = cached_encode(embedder, abstracts, batch_size=64, progress=True)  # embeds all
    vectors = cached_encode(embedder, abstracts + new_ones)   # embeds only the new ones

Layout: ``cache_dir()/embeddings/<sanitized embedder key>/shard-*.safetensors``, each shard holding
``embeddings`` (float32 [n, d]) and ``hashes`` (uint8 [n, 32], the sha256 of each UTF-8 text).
Shards are only ever added, each written atomically, so concurrent writers cannot corrupt each
other (at worst a text is stored twice). Nothing is pickled; a shard that does not parse or has
the wrong layout is a DataError naming the file (delete it to re-embed its texts).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from persalign.errors import DataError
from persalign.io import atomic_write
from persalign.models.cache import cache_dir, sanitize_key

log = logging.getLogger(__name__)

SHARD_FORMAT = "persalign-embeddings/1"
HASH_BYTES = 32


class TextEncoder(Protocol):
    """What :func:`cached_encode` needs from an embedder (``Embedder`` is one)."""

    @property
    def cache_key(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray: ...


def text_hash(text: str) -> bytes:
    """The 32-byte sha256 of ``text`` in UTF-8: the cache key of one text."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """The stored embeddings of one embedder (one ``key``), as append-only shards."""

    def __init__(self, key: str, dim: int, root: str | Path | None = None):
        self.key = key
        self.dim = dim
        base = Path(root) if root is not None else cache_dir() / "embeddings"
        self.folder = base / sanitize_key(key)

    def shard_paths(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.safetensors"))

    def load(self) -> tuple[dict[bytes, int], np.ndarray]:
        """All stored embeddings: a map text hash -> row, and the rows [n, dim]."""
        index: dict[bytes, int] = {}
        blocks: list[np.ndarray] = []
        offset = 0
        for path in self.shard_paths():
            hashes, embeddings = self._read_shard(path)
            for row, digest in enumerate(hashes):
                index[digest.tobytes()] = offset + row
            blocks.append(embeddings)
            offset += len(embeddings)
        if not blocks:
            return index, np.empty((0, self.dim), dtype=np.float32)
        return index, np.concatenate(blocks, axis=0)

    def append(self, hashes: Sequence[bytes], embeddings: np.ndarray) -> Path:
        """Store new rows as one new shard, written atomically; returns its path."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.shape != (len(hashes), self.dim):
            raise ValueError(
                f"expected embeddings of shape ({len(hashes)}, {self.dim}), got {embeddings.shape}"
            )
        if any(len(digest) != HASH_BYTES for digest in hashes):
            raise ValueError("every hash must be a 32-byte sha256 digest")
        hash_array = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(-1, HASH_BYTES)
        payload = safetensors.numpy.save(
            {"embeddings": embeddings, "hashes": hash_array},
            metadata={"format": SHARD_FORMAT, "key": self.key},
        )
        name = f"shard-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
        path = self.folder / name
        with atomic_write(path, "wb") as handle:
            handle.write(payload)
        return path

    def _read_shard(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            tensors = safetensors.numpy.load_file(path)
        except (SafetensorError, OSError, ValueError) as exc:
            message = f"corrupt embedding cache shard ({exc}); delete it to re-embed"
            raise DataError(message, path) from exc
        embeddings, hashes = tensors.get("embeddings"), tensors.get("hashes")
        if embeddings is None or hashes is None:
            raise DataError("embedding cache shard lacks 'embeddings' or 'hashes'", path)
        well_formed = embeddings.dtype == np.float32 and embeddings.ndim == 2
        if not well_formed or embeddings.shape[1] != self.dim:
            raise DataError(
                f"embedding cache shard holds {embeddings.dtype} {list(embeddings.shape)}, "
                f"expected float32 [n, {self.dim}]",
                path,
            )
        if hashes.dtype != np.uint8 or hashes.shape != (len(embeddings), HASH_BYTES):
            raise DataError(
                f"embedding cache shard hashes are {hashes.dtype} {list(hashes.shape)}, "
                f"expected uint8 [{len(embeddings)}, {HASH_BYTES}]",
                path,
            )
        return hashes, embeddings


def cached_encode(
    embedder: TextEncoder,
    texts: Sequence[str],
    batch_size: int = 64,
    progress: bool = False,
    *,
    cache: EmbeddingCache | None = None,
) -> np.ndarray:
    """``embedder.encode(texts)``, reading what is cached and embedding only the rest, once each.

    Returns float32 [len(texts), dim] in the order of ``texts`` (duplicates get equal rows).
    """
    if cache is None:
        cache = EmbeddingCache(embedder.cache_key, embedder.dim)
    hashes = [text_hash(text) for text in texts]
    index, stored = cache.load()
    missing: dict[bytes, str] = {}
    for digest, text in zip(hashes, texts, strict=True):
        if digest not in index and digest not in missing:
            missing[digest] = text
    cached_count = sum(digest in index for digest in hashes)
    log.info(
        "embeddings for %d texts (%s): %d cached, %d unique texts to embed",
        len(hashes),
        embedder.cache_key,
        cached_count,
        len(missing),
    )
    new = np.empty((0, cache.dim), dtype=np.float32)
    if missing:
        new = embedder.encode(list(missing.values()), batch_size=batch_size, progress=progress)
        new = np.asarray(new, dtype=np.float32)
        cache.append(list(missing), new)
    new_row = {digest: row for row, digest in enumerate(missing)}
    out = np.empty((len(hashes), cache.dim), dtype=np.float32)
    for position, digest in enumerate(hashes):
        row = index.get(digest)
        out[position] = stored[row] if row is not None else new[new_row[digest]]
    return out
