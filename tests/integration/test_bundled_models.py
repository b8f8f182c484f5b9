"""The real bundled models: SmolLM2-135M-Instruct (GGUF, converted once) and all-MiniLM-L6-v2.

The conversion happens once per cache (``$PERSALIGN_CACHE``, from tests/conftest.py); set that
variable to a folder of your own to keep the converted model between test sessions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from persalign.models import (
    BUNDLED,
    cached_encode,
    load_causal_lm,
    load_embedder,
    load_tokenizer,
    resolve_model_path,
)
from persalign.models.bundled import find_package_dir
from persalign.models.cache import read_marker

pytestmark = pytest.mark.integration

SMOLLM = "bundled:smollm2-135m-instruct"
MINILM = "bundled:all-minilm-l6-v2"


def _require_package(bundled_name: str) -> None:
    entry = BUNDLED.get(bundled_name)
    if find_package_dir(entry.package) is None:
        pytest.skip(f"{entry.package} is not installed ({entry.install})")


@pytest.fixture(scope="module", autouse=True)
def _module_cache(persalign_cache: Path) -> Iterator[None]:
    """Module fixtures run before conftest's per-test autouse one, so set the cache here too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSALIGN_CACHE", str(persalign_cache))
        yield


@pytest.fixture(scope="module")
def smollm_folder(persalign_cache: Path) -> Path:
    _require_package("smollm2-135m-instruct")
    folder = Path(resolve_model_path(SMOLLM))  # converts on the first run in this cache
    assert folder.is_relative_to(persalign_cache)
    return folder


def test_smollm2_converts_to_a_dense_folder(smollm_folder: Path) -> None:
    assert (smollm_folder / "model.safetensors").is_file()
    marker = read_marker(smollm_folder)
    assert marker is not None and len(marker["source_sha256"]) == 64
    config = (smollm_folder / "config.json").read_text()
    assert "quantization_config" not in config


def test_smollm2_loads_and_gives_finite_logits(smollm_folder: Path) -> None:
    model = load_causal_lm(SMOLLM, device="cpu")
    tokenizer = load_tokenizer(SMOLLM)
    assert model.config.num_hidden_layers == 30
    assert getattr(model, "hf_quantizer", None) is None
    assert tokenizer.chat_template
    assert tokenizer.pad_token is not None
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>assistant" in prompt
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.vocab_size)
    assert torch.isfinite(logits).all()
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_smollm2_second_resolve_is_fast(smollm_folder: Path) -> None:
    start = time.perf_counter()
    again = resolve_model_path(SMOLLM)
    assert time.perf_counter() - start < 1.0
    assert Path(again) == smollm_folder


@pytest.fixture(scope="module")
def minilm():
    _require_package("all-minilm-l6-v2")
    return load_embedder(MINILM, device="cpu")


def test_minilm_gives_384_dim_unit_vectors_that_rank_similar_higher(minilm) -> None:
    texts = [
        "A man is playing a guitar on stage.",
        "Someone performs music with a guitar in front of an audience.",
        "The quarterly earnings report showed a decline in revenue.",
    ]
    vectors = minilm.encode(texts)
    assert minilm.dim == 384 and vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.5 > unrelated


def test_minilm_cached_encode_matches_direct(minilm) -> None:
    texts = ["Dependency parsing of low-resource languages.", "Word embeddings for Hindi."]
    direct = minilm.encode(texts)
    np.testing.assert_allclose(cached_encode(minilm, texts), direct, atol=1e-5)
    np.testing.assert_allclose(cached_encode(minilm, texts[::-1]), direct[::-1], atol=1e-5)
