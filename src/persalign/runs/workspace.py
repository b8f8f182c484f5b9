"""What the jobs of a run share inside one process: loaded benchmarks, policies, reward models
and frozen backbones (kept between jobs in a memory-bounded LRU), per-job log files, and
resumable generations.

    bench = benchmark("runs/demo/benchmarks/pref-acl")
    policy = policy_for({"spec": "bundled:smollm2-135m-instruct", ...})
    backbone = frozen_backbone(config)          # shared by every frozen-mode model job
    with job_log(Path("runs/demo/cells/x/log.txt")):
        rows = generate_resumable(decoder, requests, Path("runs/demo/cells/x"), batch_size=8)

Cached objects are read-only to the jobs (models in eval mode, no gradients), so a job computes
the same result whether its models were just loaded or reused from an earlier job.

``MODELS`` is an LRU keyed by the hash of each model's spec (the fields that decide its weights
and placement), bounded by the bytes of the models' parameters and buffers
(``$PERSALIGN_MODEL_CACHE_MIB``, default 4096): the least recently used model goes first, and
the newest always stays. It is module state, so it lives as long as the process: the whole run
under the local backend, a worker's lifetime under Ray (workers are reused between tasks).
Loads are counted as the job's starting time (``cost.starting``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from persalign.data.benchmark_folder import BENCHMARK_FILES, MANIFEST, load_benchmark
from persalign.decoding import Policy
from persalign.io import dumps, read_json
from persalign.logs import track
from persalign.rewards import RewardConfig, load
from persalign.rewards.engine.backbone import Backbone
from persalign.runs.cost import starting
from persalign.runs.sections import PolicyConfig

log = logging.getLogger(__name__)
GENERATIONS = "generations.jsonl"
PARTIAL = "generations.partial.jsonl"

MODEL_MARKER = "run_model.json"  # written last into models/<id>/: the model is finished

_benchmarks: dict[str, tuple[Any, bool, Any]] = {}  # path -> (files' stamp, verified, benchmark)
MIB = 1024 * 1024
DEFAULT_MODEL_CACHE_MIB = 4096


def model_bytes(obj: Any) -> int:
    """Bytes of an object's tensors: a module's parameters and buffers (a Policy's ``model``)."""
    module = obj if isinstance(obj, torch.nn.Module) else getattr(obj, "model", None)
    if not isinstance(module, torch.nn.Module):
        return 0
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}  # shared once
    return sum(t.numel() * t.element_size() for t in tensors.values())


class ModelLRU:
    """Loaded models by spec hash, least recently used evicted beyond ``max_bytes``."""

    def __init__(self, max_bytes: int | None = None):
        if max_bytes is None:
            mib = float(os.environ.get("PERSALIGN_MODEL_CACHE_MIB", DEFAULT_MODEL_CACHE_MIB))
            max_bytes = int(mib * MIB)
        self.max_bytes = max_bytes
        self.entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def key(kind: str, spec: Any) -> str:
        """The cache key: the kind and the sha256 of the spec's canonical JSON."""
        return f"{kind}:{hashlib.sha256(dumps(spec).encode()).hexdigest()}"

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        """The model under ``key``, loaded (as starting time) on a miss."""
        if key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key][0]
        self.misses += 1
        with starting():
            obj = load()
        self.entries[key] = (obj, model_bytes(obj))
        self._evict()
        return obj

    def total_bytes(self) -> int:
        return sum(size for _, size in self.entries.values())

    def _evict(self) -> None:
        while len(self.entries) > 1 and self.total_bytes() > self.max_bytes:
            evicted, _ = self.entries.popitem(last=False)
            log.info("model cache: released %s", evicted)

    def clear(self) -> None:
        self.entries.clear()


MODELS = ModelLRU()


def marker_matches(path: Path, key: str, spec_hash: str) -> bool:
    """Whether the JSON file ``path`` exists and records ``spec_hash`` under ``key``: how a
    model (run_model.json) or a cell (metrics.json) is known to be finished for this spec.
    A missing, unreadable or damaged file means unfinished."""
    if not path.is_file():
        return False
    try:
        return read_json(path).get(key) == spec_hash
    except Exception:  # unreadable or not an object: not finished
        return False


def _stamp(root: Path) -> tuple:
    """(name, size, mtime_ns, inode) of the folder's benchmark files: changes on a rebuild."""
    out = []
    for name in sorted({*BENCHMARK_FILES.values(), MANIFEST}):
        if (root / name).is_file():
            stat = (root / name).stat()
            out.append((name, stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(out)


def benchmark(path: str | Path, *, verify: bool = True):
    """The benchmark in ``path``, loaded once per process (again if its files changed since,
    e.g. rebuilt); ``verify`` (the config's ``verify``): checked against its manifest."""
    key = str(Path(path).resolve())
    stamp = _stamp(Path(key))
    cached = _benchmarks.get(key)
    if cached is None or cached[0] != stamp or (verify and not cached[1]):
        with starting():
            _benchmarks[key] = (stamp, verify, load_benchmark(key, verify=verify))
    return _benchmarks[key][2]


def policy_for(spec: PolicyConfig) -> Policy:
    """The policy of a cell spec's ``policy`` entry (kept in ``MODELS``)."""
    fields = ("spec", "device", "dtype", "max_prompt_tokens", "trust_remote_code")
    return MODELS.get(
        MODELS.key("policy", spec.model_dump(mode="json", include=set(fields))),
        lambda: Policy.load(
            spec.spec,
            device=spec.device,
            dtype=spec.dtype,
            max_prompt_tokens=spec.max_prompt_tokens,
            trust_remote_code=spec.trust_remote_code,
        ),
    )


def reward_model(folder: Path, spec_hash: str):
    """The trained reward model in ``folder`` (checked against the model job's hash)."""
    if not marker_matches(folder / MODEL_MARKER, "hash", spec_hash):
        raise RuntimeError(f"{folder} holds another model than this cell expects")
    return MODELS.get(
        MODELS.key("reward", [str(folder.resolve()), spec_hash]), lambda: load(folder)
    )


def frozen_backbone(config: RewardConfig) -> Backbone:
    """The adapter-free backbone of a ``backbone_training="frozen"`` reward config, shared by
    every model job that names the same weights and placement (it never trains)."""
    fields = ("backbone", "device", "dtype", "trust_remote_code")
    spec = config.model_dump(mode="json", include=set(fields))
    return MODELS.get(
        MODELS.key("frozen-backbone", spec),
        lambda: Backbone.load(
            config.backbone,
            None,
            device=config.device,
            dtype=config.dtype,
            trust_remote_code=config.trust_remote_code,
        ),
    )


@contextmanager
def job_log(path: Path) -> Iterator[None]:
    """Copy persalign's log records to ``path`` (appended) while the job runs."""
    logger = logging.getLogger("persalign")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous = logger.level
    if previous == logging.NOTSET or previous > logging.INFO:
        logger.setLevel(logging.INFO)  # a Ray worker has no logging set up
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


def read_generations(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _complete_lines(path: Path, batch_size: int) -> list[dict[str, Any]]:
    """Whole batches already written to a partial file; anything after them is cut off."""
    if not path.is_file():
        return []
    rows, ends = [], [0]
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            try:
                rows.append(json.loads(raw))
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            ends.append(ends[-1] + len(raw))
    keep = len(rows) // batch_size * batch_size
    with path.open("r+b") as handle:
        handle.truncate(ends[keep])
    return rows[:keep]


def generate_resumable(
    decoder, requests: Sequence[Any], folder: Path, batch_size: int, what: str = "generating"
) -> list[dict[str, Any]]:
    """Generations for ``requests`` in fixed batches, appended to a partial file after each
    batch; a rerun continues after the last whole batch, so every batch holds the same
    requests as in an uninterrupted run. The finished file is renamed into place."""
    final = folder / GENERATIONS
    if final.is_file():
        return read_generations(final)
    partial = folder / PARTIAL
    rows = _complete_lines(partial, batch_size)
    if rows:
        log.info("resuming %s after %d of %d outputs", what, len(rows), len(requests))
    starts = range(len(rows), len(requests), batch_size)
    with partial.open("ab") as handle:
        for start in track(starts, what, total=len(starts)):
            batch = requests[start : start + batch_size]
            out = [g.to_json() for g in decoder.generate(batch, progress=False)]
            handle.write("".join(dumps(g) + "\n" for g in out).encode())
            handle.flush()
            os.fsync(handle.fileno())
            rows += out
    os.replace(partial, final)
    return rows
