"""Load a causal LM and its tokenizer from a hub id, a local folder or ``bundled:<name>``.

    model = load_causal_lm("bundled:smollm2-135m-instruct")        # offline, converted once
    model = load_causal_lm("Qwen/Qwen2.5-0.5B-Instruct", dtype="bfloat16", device="cuda")
    model = load_causal_lm("runs/my-model")                         # a save_pretrained folder
    tokenizer = load_tokenizer("bundled:smollm2-135m-instruct")
    tokenizer.padding_side = "left"                                 # the caller decides

Every loader goes through :func:`resolve_model_path`, so the three kinds of spec behave the same
everywhere. Device and dtype default to :func:`~persalign.models.device.pick_device` and
:func:`~persalign.models.device.pick_dtype` (bf16 on CUDA, fp32 on CPU). Remote code is never
run unless the caller passes ``trust_remote_code=True``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from persalign.errors import ConfigError
from persalign.models.bundled import ModelKind, bundled_model_path, bundled_name
from persalign.models.device import pick_device, pick_dtype

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# "org/name" with the characters the hub allows; anything else that does not exist is a typo.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def looks_like_hub_id(spec: str) -> bool:
    """Whether ``spec`` has the shape of a hub repository id (``org/name``)."""
    return bool(_HUB_ID.match(spec)) and ".." not in spec


def resolve_model_path(spec: str | Path, *, kind: ModelKind | None = None) -> str:
    """What ``from_pretrained`` should receive for ``spec``: a local folder or a hub id.

    - ``bundled:<name>``: the bundled model's folder (a GGUF is converted once into the cache);
      ``kind`` ("causal-lm" or "embedder") rejects a bundled model of the other kind;
    - an existing local folder: its absolute path;
    - ``org/name`` that is not a local path: returned unchanged, for the hub.

    Anything else is a ConfigError naming ``spec``.
    """
    text = str(spec).strip()
    if not text:
        raise ConfigError("empty model spec (use a hub id, a local folder or bundled:<name>)")
    name = bundled_name(text)
    if name is not None:
        return str(bundled_model_path(name, kind=kind))
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        hint = ""
        if path.suffix == ".gguf":
            hint = " (a GGUF file: register it as a bundled model, which converts it once)"
        raise ConfigError(f"model path {text!r} is a file, not a model folder{hint}")
    if looks_like_hub_id(text):
        return text
    raise ConfigError(
        f"model {text!r} is neither an existing folder nor a hub id like 'org/name' "
        "nor bundled:<name>"
    )


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, spec: str = "") -> PreTrainedTokenizerBase:
    """Give ``tokenizer`` a pad token, falling back to its eos token. Returns it for chaining."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"tokenizer of {spec or 'the model'} has neither a pad nor eos token")
        tokenizer.pad_token = tokenizer.eos_token
        log.debug("tokenizer of %s: pad token set to eos %r", spec, tokenizer.eos_token)
    return tokenizer


def load_tokenizer(spec: str | Path, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of ``spec``, with a pad token guaranteed (eos when it has none).

    The padding side is left as the model ships it: callers set ``tokenizer.padding_side``
    ("left" for batched generation, "right" for scoring whole sequences).
    """
    path = resolve_model_path(spec)
    tokenizer = _from_pretrained(AutoTokenizer, path, spec, trust_remote_code=trust_remote_code)
    return ensure_pad_token(tokenizer, str(spec))


def load_causal_lm(
    spec: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A causal LM on ``device`` in ``dtype`` (chosen automatically when None), in eval mode."""
    path = resolve_model_path(spec, kind="causal-lm")
    target_device = pick_device(device)
    target_dtype = pick_dtype(target_device, dtype)
    log.info("loading %s (%s) on %s as %s", spec, path, target_device, target_dtype)
    model = _from_pretrained(
        AutoModelForCausalLM,
        path,
        spec,
        trust_remote_code=trust_remote_code,
        dtype=target_dtype,
    )
    model.to(target_device)
    model.eval()
    return model


def _from_pretrained(factory: Any, path: str, spec: str | Path, **kwargs: Any) -> Any:
    """``factory.from_pretrained``; load failures (missing files, offline hub) -> ConfigError."""
    try:
        return factory.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ConfigError(f"cannot load {spec!s} ({path}): {exc}") from exc
