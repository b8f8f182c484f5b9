"""Sentence embedders: L2-normalized float32 vectors for retrieval, mining and BERTScore-like use.

    embedder = load_embedder("bundled:all-minilm-l6-v2")  # or a sentence-transformers id
    embedder.max_seq_length = 128  # truncate long abstracts: faster
    vectors = embedder.encode(["a text", "another"], batch_size=64, progress=True)
    vectors.shape, vectors.dtype
    # ((2, 384), dtype('float32'))
    float(vectors[0] @ vectors[1])                          # cosine similarity
    # 0.31...

Use :func:`persalign.models.embedding_cache.cached_encode` to embed a corpus once and reuse it:
the cache is keyed by :attr:`Embedder.cache_key`, which includes ``max_seq_length`` because
truncation changes the vectors. ``torch.set_num_threads`` is left to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.progress import track

from persalign.errors import ConfigError
from persalign.models.bundled import bundled_name
from persalign.models.device import pick_device
from persalign.models.loading import resolve_model_path

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

PROGRESS_CHUNK_BATCHES = 32  # with a progress bar, encode this many batches per update


class Embedder:
    """A sentence-transformers model behind a small, stable interface.

    ``name`` is the spec it was loaded from (an absolute path for local folders), stable across
    runs; ``cache_key`` adds ``max_seq_length``.
    """

    def __init__(self, model: SentenceTransformer, name: str):
        self.model = model
        self.name = name

    @property
    def dim(self) -> int:
        dim = self.model.get_embedding_dimension()
        if dim is None:
            raise ConfigError(f"embedder {self.name!r} does not report its embedding dimension")
        return int(dim)

    @property
    def max_seq_length(self) -> int:
        """Longest input in tokens; longer texts are truncated."""
        return int(self.model.max_seq_length)

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        if value < 1:
            raise ConfigError(f"max_seq_length must be positive, got {value}")
        self.model.max_seq_length = int(value)

    @property
    def cache_key(self) -> str:
        """What an embedding cache is keyed by: the model and everything that changes its output."""
        return f"{self.name}|max_seq_length={self.max_seq_length}"

    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        """Embed ``texts``: float32 array [N, dim], each row of unit L2 norm, in input order.

        sentence-transformers sorts each call's texts by length, so padding waste stays small;
        with ``progress`` the texts go in chunks of a few thousand to drive a rich progress bar.
        """
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        chunk = max(batch_size * PROGRESS_CHUNK_BATCHES, 1) if progress else len(texts)
        starts = range(0, len(texts), chunk)
        if progress:
            starts = track(starts, description=f"embedding {len(texts)} texts")
        for start in starts:
            part = texts[start : start + chunk]
            vectors = self.model.encode(
                part,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[start : start + len(part)] = np.asarray(vectors, dtype=np.float32)
        return out

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, dim={self.dim}, max_seq_length={self.max_seq_length})"


def load_embedder(
    spec: str | Path,
    *,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> Embedder:
    """An :class:`Embedder` for ``bundled:<name>``, a sentence-transformers hub id or a folder.

    A plain transformers encoder folder also works (sentence-transformers adds mean pooling).
    """
    from sentence_transformers import SentenceTransformer  # heavy: only when embedding

    text = str(spec).strip()
    path = resolve_model_path(text, kind="embedder")
    # bundled and hub specs are their own stable name; a local folder is named by its full path
    name = text if bundled_name(text) is not None or path == text else path
    target_device = pick_device(device)
    log.info("loading embedder %s (%s) on %s", name, path, target_device)
    try:
        model = SentenceTransformer(
            path, device=str(target_device), trust_remote_code=trust_remote_code
        )
    except OSError as exc:
        raise ConfigError(f"cannot load embedder {text} ({path}): {exc}") from exc
    model.eval()
    return Embedder(model, name)
