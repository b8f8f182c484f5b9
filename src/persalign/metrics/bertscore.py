"""BERTScore-F1 through the bert-score package, with offline models and a per-process cache.

    bertscore_f1(["a title"], ["the title"])                          # bundled MiniLM, 6 layers
    # [0.93...]                                                       # raw: no shipped baseline
    bertscore_f1(preds, refs, model="roberta-large")                 # L17, rescaled (the paper)
    bertscore_f1(preds, refs, model="roberta-large", rescale="never")  # raw roberta-large
    bertscore_f1(preds, refs, model="/models/my-encoder", num_layers=8,
                 rescale="always", baseline_path="my-encoder.tsv")   # a baseline of your own
    resolve_bertscore_model("bundled:all-minilm-l6-v2", None)
    # ('bundled:all-minilm-l6-v2', 6)
    bertscore_baseline("roberta-large", 17)                          # the file bert-score ships
    # PosixPath('.../bert_score/rescale_baseline/en/roberta-large.tsv')

``model`` is a spec as everywhere in persalign (``bundled:<name>``, a local folder, a hub id).
The layer whose embeddings are compared is bert-score's tuned default for models in its table
(``roberta-large`` -> 17); for any other model (the bundled MiniLM, local folders) it must be
given or it defaults to the model's last layer, read from its config.

Scale (``rescale``): the paper's BERTScore-F1 (64-72) is roberta-large rescaled with
bert-score's baseline, ``(F - b) / (1 - b)`` with ``b`` the F1 of random sentence pairs at that
layer (bert-score's ``rescale_with_baseline``). ``auto`` (the default) rescales when bert-score
ships a baseline file for the model and layer (``bert_score/rescale_baseline/en/<model>.tsv``:
hub models in its table, such as roberta-large; never a local folder or the bundled MiniLM) and
gives raw F1 otherwise; ``always`` rescales or raises ConfigError; ``never`` gives raw F1.
``baseline_path`` names a baseline file of your own (bert-score's format: ``LAYER,P,R,F``, one
row per layer from 0) and then rescales in ``auto`` and ``always``. A scorer is loaded once per
(model, layers, device, baseline) and reused within the process. Pairs whose prediction or
reference is empty score raw 0 (what bert-score itself returns, minus its stderr warning), and
rescaled ``-b / (1 - b)``, its image, so a rescaled mean is always the rescaled raw mean.
"""

from __future__ import annotations

import csv
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
BASELINE_LANG = "en"  # the language of bert-score's baseline files the scores are rescaled with
RESCALE_MODES: tuple[str, ...] = ("auto", "always", "never")

_SCORERS: dict[tuple[str, int, str, str], Any] = {}
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


def shipped_baseline(model_path: str) -> Path | None:
    """bert-score's own baseline file for ``model_path`` (what it passes as ``model_type``), or
    None: bert-score ships them for hub models in its table, never for a local folder."""
    import bert_score  # lazy: bert-score is needed only for BERTScore

    if Path(model_path).expanduser().is_absolute() or Path(model_path).expanduser().is_dir():
        return None
    root = Path(bert_score.__file__).parent / "rescale_baseline" / BASELINE_LANG
    file = root / f"{model_path}.tsv"
    return file if file.is_file() else None


def read_baseline(file: str | Path, num_layers: int) -> float | None:
    """The F1 baseline ``b`` of layer ``num_layers`` in a bert-score baseline file (its row
    ``num_layers`` counted from 0, as bert-score reads it); None when the file has no such row."""
    try:
        with open(file, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigError(f"cannot read BERTScore baseline file {file}: {exc}") from exc
    if num_layers >= len(rows):
        return None
    try:
        return float(rows[num_layers]["F"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"BERTScore baseline file {file}: row {num_layers} has no number in column F "
            "(bert-score's format: LAYER,P,R,F)"
        ) from exc


def check_rescale(rescale: str) -> str:
    if rescale not in RESCALE_MODES:
        raise ConfigError(
            f"BERTScore rescale must be one of {', '.join(RESCALE_MODES)}, got {rescale!r}"
        )
    return rescale


def bertscore_baseline(
    model: str,
    num_layers: int | None = None,
    rescale: str = "auto",
    baseline_path: str | Path | None = None,
) -> Path | None:
    """The baseline file the scores are rescaled with, or None for raw F1 (see module doc).

    Loads no weights. ``always`` without a usable baseline is a ConfigError naming the model.
    """
    if check_rescale(rescale) == "never":
        return None
    spec, layers = resolve_bertscore_model(model, num_layers)
    if baseline_path is not None:
        file: Path | None = Path(baseline_path).expanduser()
        if not file.is_file():
            raise ConfigError(f"BERTScore baseline file {baseline_path} does not exist")
    else:
        file = shipped_baseline(bertscore_model_path(spec))
    if file is not None and read_baseline(file, layers) is None:
        log.warning("BERTScore baseline %s has no row for layer %d: not usable", file, layers)
        file = None
    if file is None and rescale == "always":
        raise ConfigError(
            f"no BERTScore baseline for {spec} at layer {layers}: bert-score ships baselines "
            "only for hub models in its table (e.g. roberta-large); pass a baseline file of "
            "your own or rescale 'auto' / 'never'"
        )
    if file is None:
        log.info("BERTScore of %s (layer %d) is raw: no baseline for it", spec, layers)
    return file


def load_bertscore(
    model: str = DEFAULT_BERTSCORE_MODEL,
    num_layers: int | None = None,
    device: str | None = None,
    baseline: str | Path | None = None,
) -> Any:
    """A ``bert_score.BERTScorer`` for ``model``, loaded once per (model, layers, device,
    baseline); with a ``baseline`` file its scores are rescaled (``rescale_with_baseline``)."""
    spec, layers = resolve_bertscore_model(model, num_layers)
    path = bertscore_model_path(spec)
    target = str(pick_device(device))
    key = (path, layers, target, "" if baseline is None else str(baseline))
    with _LOCK:
        scorer = _SCORERS.get(key)
        if scorer is None:
            from bert_score import BERTScorer  # lazy: bert-score is needed only for BERTScore

            log.info("loading BERTScore model %s (%s), layer %d, on %s", spec, path, layers, target)
            rescaling: dict[str, Any] = {}
            if baseline is not None:
                rescaling = dict(
                    lang=BASELINE_LANG, rescale_with_baseline=True, baseline_path=str(baseline)
                )
            try:
                scorer = BERTScorer(model_type=path, num_layers=layers, device=target, **rescaling)
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
    rescale: str = "auto",
    baseline_path: str | Path | None = None,
) -> list[float]:
    """BERTScore-F1 of each (prediction, reference) pair, rescaled or raw by ``rescale`` (see
    :func:`bertscore_baseline`); raw 0.0 (rescaled: ``-b / (1 - b)``) where either text is empty."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    baseline = bertscore_baseline(model, num_layers, rescale, baseline_path)
    empty = 0.0
    if baseline is not None:
        b = read_baseline(baseline, resolve_bertscore_model(model, num_layers)[1])
        if b is None:  # bertscore_baseline returns only files with a row for the layer
            raise ConfigError(f"BERTScore baseline {baseline}: no row for the layer")
        empty = (0.0 - b) / (1.0 - b)  # what rescaling makes of bert-score's raw 0
    out = [empty] * len(predictions)
    keep = [
        i
        for i, (p, r) in enumerate(zip(predictions, references, strict=True))
        if p.strip() and r.strip()
    ]
    if not keep:
        return out
    scorer = load_bertscore(model, num_layers, device, baseline)
    _, _, f1 = scorer.score(
        [predictions[i] for i in keep], [references[i] for i in keep], batch_size=batch_size
    )
    for i, value in zip(keep, f1.tolist(), strict=True):
        out[i] = float(value)
    return out
