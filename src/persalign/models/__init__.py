"""Models: causal LMs, tokenizers and sentence embedders from a hub id, a folder or ``bundled:``.

    from persalign.models import load_causal_lm, load_tokenizer, load_embedder, cached_encode
    model = load_causal_lm("bundled:smollm2-135m-instruct")   # device/dtype picked for you
    tokenizer = load_tokenizer("bundled:smollm2-135m-instruct")
    embedder = load_embedder("bundled:all-minilm-l6-v2")
    vectors = cached_encode(embedder, texts)                 # embedded once, then cached

Modules: ``device`` (pick_device, pick_dtype), ``cache`` (cache_dir, build-once folders),
``bundled`` (the BUNDLED registry, GGUF conversion), ``loading`` (resolve_model_path and the
loaders), ``embedder`` (Embedder), ``embedding_cache`` (EmbeddingCache, cached_encode).
"""

from persalign.models.bundled import BUNDLED, BundledModel, bundled_model_path
from persalign.models.cache import build_once, cache_dir, sanitize_key
from persalign.models.device import pick_device, pick_dtype
from persalign.models.embedder import Embedder, load_embedder
from persalign.models.embedding_cache import EmbeddingCache, cached_encode, text_hash
from persalign.models.loading import (
    ensure_pad_token,
    load_causal_lm,
    load_tokenizer,
    looks_like_hub_id,
    resolve_model_path,
)

__all__ = [
    "BUNDLED",
    "BundledModel",
    "Embedder",
    "EmbeddingCache",
    "build_once",
    "bundled_model_path",
    "cache_dir",
    "cached_encode",
    "ensure_pad_token",
    "load_causal_lm",
    "load_embedder",
    "load_tokenizer",
    "looks_like_hub_id",
    "pick_device",
    "pick_dtype",
    "resolve_model_path",
    "sanitize_key",
    "text_hash",
]
