"""What the jobs of a run share inside one process: loaded benchmarks, policies and reward
models (cached, the last one of each kind), per-job log files, and resumable generations.

    bench = benchmark("runs/demo/benchmarks/pref-acl")
    policy = policy_for({"spec": "bundled:smollm2-135m-instruct", ...})
    with job_log(Path("runs/demo/cells/x/log.txt")):
        rows = generate_resumable(decoder, requests, Path("runs/demo/cells/x"), batch_size=8)

Cached objects are read-only to the jobs (models in eval mode, no gradients), so a job computes
the same result whether its models were just loaded or reused from an earlier job.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from persalign.data.benchmark_folder import BENCHMARK_FILES, MANIFEST, load_benchmark
from persalign.decoding import Policy
from persalign.io import dumps, read_json
from persalign.logs import track
from persalign.rewards import load
from persalign.runs.sections import PolicyConfig

log = logging.getLogger(__name__)
GENERATIONS = "generations.jsonl"
PARTIAL = "generations.partial.jsonl"

MODEL_MARKER = "run_model.json"  # written last into models/<id>/: the model is finished

_benchmarks: dict[str, tuple[Any, bool, Any]] = {}  # path -> (files' stamp, verified, benchmark)
_policy: dict[str, Any] = {}
_reward: dict[str, Any] = {}


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
        _benchmarks[key] = (stamp, verify, load_benchmark(key, verify=verify))
    return _benchmarks[key][2]


def policy_for(spec: PolicyConfig) -> Policy:
    """The policy of a cell spec's ``policy`` entry; the previous one is released."""
    fields = ("spec", "device", "dtype", "max_prompt_tokens", "trust_remote_code")
    key = dumps(spec.model_dump(mode="json", include=set(fields)))
    if key not in _policy:
        _policy.clear()
        _policy[key] = Policy.load(
            spec.spec,
            device=spec.device,
            dtype=spec.dtype,
            max_prompt_tokens=spec.max_prompt_tokens,
            trust_remote_code=spec.trust_remote_code,
        )
    return _policy[key]


def reward_model(folder: Path, spec_hash: str):
    """The trained reward model in ``folder`` (checked against the model job's hash)."""
    if not marker_matches(folder / MODEL_MARKER, "hash", spec_hash):
        raise RuntimeError(f"{folder} holds another model than this cell expects")
    key = f"{folder.resolve()}:{spec_hash}"
    if key not in _reward:
        _reward.clear()
        _reward[key] = load(folder)
    return _reward[key]


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
