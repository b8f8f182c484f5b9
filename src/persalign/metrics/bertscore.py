"""BERTScore-F1 through the bert-score package, with offline models and a per-process cache.

    bertscore_f1(["a title"], ["the title"])                          # bundled MiniLM, 6 layers
    # [0.93...]
    bertscore_f1(preds, refs, model="roberta-large")                 # bert-score's table: L17
    bertscore_f1(preds, refs, model="/models/my-encoder", num_layers=8)
    resolve_bertscore_model("bundled:all-minilm-l6-v2", None)
    # ('bundled:all-minilm-l6-v2', 6)

``model`` is a spec as everywhere in persalign (``bundled:<name>``, a local folder, a hub id).
The layer whose embeddings are compared is bert-score's tuned default for models in its table
(``roberta-large`` -> 17); for any other model (the bundled MiniLM, local folders) it must be
given or it defaults to the model's last layer, read from its config. Scores are raw F1 (no
baseline rescaling: the baselines are tuned for hub models and need the hub). A scorer is
loaded once per (model, layers, device) and reused within the process. Pairs whose prediction
or reference is empty score 0 (what bert-score itself returns, minus its stderr warning).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from persalign.errors import ConfigError
from persalign.models.device import pick_device
from persalign.models.loading import resolve_model_path

log = logging.getLogger(__name__)

DEFAULT_BERTSCORE_MODEL = "bundled:all-minilm-l6-v2"

_SCORERS: dict[tuple[str, int, str], Any] = {}
_LOCK = threading.Lock()


def _table_layers(name: str) -> int | None:
    """bert-score's tuned layer for a model in its table (by hub id), else None."""
    from bert_score.utils import model2layers  # lazy: bert-score is needed only for BERTScore

    return model2layers.get(name)


def bertscore_model_path(spec: str) -> str:
    """What bert-score loads: a local folder (also for ``bundled:``) or a hub id.

    bert-score's own names (``roberta-large``, ``microsoft/deberta-xlarge-mnli``) are accepted
    as they are, although some of them lack the ``org/`` part of a hub id.
    """
    text = str(spec).strip()
    if _table_layers(text) is not None and not Path(text).expanduser().is_dir():
        return text
    return resolve_model_path(text)


def _config_layers(path: str, spec: str) -> int:
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config of BERTScore model {spec} ({path}): {exc}"
        ) from exc
    layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(layers, int) or layers < 1:
        raise ConfigError(
            f"BERTScore model {spec}: its config has no num_hidden_layers; pass num_layers"
        )
    return layers


def resolve_bertscore_model(model: str, num_layers: int | None = None) -> tuple[str, int]:
    """``(model, layers)``: the spec unchanged and the layer bert-score will use.

    Loads no weights (at most the model's config), so a result can always name the layer count.
    """
    spec = str(model).strip()
    if num_layers is not None:
        if num_layers < 1:
            raise ConfigError(f"BERTScore num_layers must be at least 1, got {num_layers}")
        return spec, int(num_layers)
    path = bertscore_model_path(spec)
    table = _table_layers(path)
    if table is not None:
        return spec, table
    layers = _config_layers(path, spec)
    log.info(
        "BERTScore model %s is not in bert-score's table: using its last layer (%d)", spec, layers
    )
    return spec, layers


def load_bertscore(
    model: str = DEFAULT_BERTSCORE_MODEL, num_layers: int | None = None, device: str | None = None
) -> Any:
    """A ``bert_score.BERTScorer`` for ``model``, loaded once per (model, layers, device)."""
    spec, layers = resolve_bertscore_model(model, num_layers)
    path = bertscore_model_path(spec)
    target = str(pick_device(device))
    key = (path, layers, target)
    with _LOCK:
        scorer = _SCORERS.get(key)
        if scorer is None:
            from bert_score import BERTScorer  # lazy: bert-score is needed only for BERTScore

            log.info("loading BERTScore model %s (%s), layer %d, on %s", spec, path, layers, target)
            try:
                scorer = BERTScorer(model_type=path, num_layers=layers, device=target)
            except OSError as exc:
                raise ConfigError(f"cannot load BERTScore model {spec} ({path}): {exc}") from exc
            except AssertionError as exc:  # bert-score checks num_layers against the model
                raise ConfigError(f"BERTScore model {spec}: {exc}") from exc
            _SCORERS[key] = scorer
    return scorer


def bertscore_f1(
    predictions: Sequence[str],
    references: Sequence[str],
    model: str = DEFAULT_BERTSCORE_MODEL,
    num_layers: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
) -> list[float]:
    """BERTScore-F1 of each (prediction, reference) pair; 0.0 where either text is empty."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    out = [0.0] * len(predictions)
    keep = [
        i
        for i, (p, r) in enumerate(zip(predictions, references, strict=True))
        if p.strip() and r.strip()
    ]
    if not keep:
        return out
    scorer = load_bertscore(model, num_layers, device)
    _, _, f1 = scorer.score(
        [predictions[i] for i in keep], [references[i] for i in keep], batch_size=batch_size
    )
    for i, value in zip(keep, f1.tolist(), strict=True):
        out[i] = float(value)
    return out
