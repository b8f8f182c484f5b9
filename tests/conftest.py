"""Shared fixtures: the shared data folder, a private cache, tiny models; no silent skips in CI.

Tests that need ``../shared/data`` find it through ``PERSALIGN_SHARED_DATA`` only (``make`` sets
it; there is no fallback to a guessed folder). Where it is unset or absent they skip with a
clear reason, except in CI (``PERSALIGN_REQUIRE_SHARED_DATA=1``, set by ``.ci/run``): there
every skip is a failure, whatever its cause (a missing shared folder, a bundled model or the
BERTScore model not installed, no ``ray``, no fork start method, a ``skipif`` marker), reported
with the skip's reason. Expected failures (``xfail``) are left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Read by huggingface_hub at import time (collection), so set before anything imports it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


REQUIRE_ENV = "PERSALIGN_REQUIRE_SHARED_DATA"


def require_everything() -> bool:
    """True in CI (``PERSALIGN_REQUIRE_SHARED_DATA=1``): no test may skip."""
    return os.environ.get(REQUIRE_ENV) == "1"


def _shared_data() -> Path | None:
    env = os.environ.get("PERSALIGN_SHARED_DATA")
    return Path(env) if env and Path(env).is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder (TL;DR batches, ACL Anthology XML, PRISM ids)."""
    path = _shared_data()
    if path is None:
        env = os.environ.get("PERSALIGN_SHARED_DATA")
        msg = (
            f"shared data folder {env!r} does not exist"
            if env
            else "shared data not found: set PERSALIGN_SHARED_DATA to ../shared/data"
        )
        if require_everything():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _skip_reason(longrepr: object) -> str:
    # A skip's longrepr is (path, line, "Skipped: reason"); anything else is shown as it is.
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport, where: str) -> None:
    reason = _skip_reason(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"{where} skipped under {REQUIRE_ENV}=1, where no test may skip ({reason}); "
        "install what it needs or give it the shared data"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI, a skipped test (in setup, call or by a skip marker) is reported as failed."""
    outcome = yield
    report = outcome.get_result()
    if require_everything() and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """In CI, a module skipped at collection (``importorskip`` at module level) is an error."""
    outcome = yield
    report = outcome.get_result()
    if require_everything() and report.skipped:
        _fail_skip(report, collector.nodeid)


@pytest.fixture(scope="session")
def persalign_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder shared by the session's tests (bundled model conversion happens once).

    Reuses ``$PERSALIGN_CACHE`` when set, so a developer's converted models are not rebuilt.
    """
    env = os.environ.get("PERSALIGN_CACHE")
    if env:
        return Path(env)
    return tmp_path_factory.mktemp("persalign-cache")


@pytest.fixture(scope="session", autouse=True)
def _cache_env(persalign_cache: Path) -> Iterator[None]:
    """Every test, and every module or session fixture, uses the test cache, never ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSALIGN_CACHE", str(persalign_cache))
        yield


# ---------------------------------------------------------------- tiny random causal LMs
TINY_CHARS = [chr(c) for c in range(32, 127)] + ["\n"]
TINY_SPECIALS = ["<unk>", "<pad>", "<eos>", "<user>", "<assistant>"]
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<' + m['role'] + '>' + m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}"
)


def save_tiny_lm(folder: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A randomly initialised Llama with a character-level tokenizer and a chat template."""
    import torch
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS + TINY_CHARS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<eos>",
        additional_special_tokens=["<user>", "<assistant>"],
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=vocab["<eos>"],
        pad_token_id=vocab["<pad>"],
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path (as a model spec) of a tiny random causal LM with a chat template."""
    return str(save_tiny_lm(tmp_path_factory.mktemp("tiny-lm")))


@pytest.fixture(scope="session")
def tiny_lm_other(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second tiny LM (other seed) sharing ``tiny_lm``'s tokenizer: a policy for an RM."""
    return str(save_tiny_lm(tmp_path_factory.mktemp("tiny-lm-other"), seed=1))
