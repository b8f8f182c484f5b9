"""Benchmark folders: train/support/query/completions JSON lines plus manifest.json.

    write_benchmark("out/pref-acl", train=..., support=..., query=..., completions=...,
                    manifest={"source": ...})
    bench = load_benchmark("out/pref-acl")

Every problem in a file raises :class:`~persalign.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persalign import __version__
from persalign.errors import DataError
from persalign.io import read_json, read_jsonl, sha256_file, write_json, write_jsonl
from persalign.types import SPLITS, Benchmark, Completion, Preference

log = logging.getLogger(__name__)

BENCHMARK_FILES = {
    "train": "train.jsonl",
    "support": "support.jsonl",
    "query": "query.jsonl",
    "completions": "completions.jsonl",
}


def write_benchmark(
    out_dir: str | Path,
    *,
    train: Sequence[Preference],
    support: Sequence[Preference],
    query: Sequence[Preference],
    completions: Sequence[Completion] = (),
    manifest: dict[str, Any],
) -> dict[str, Any]:
    """Write the benchmark layout; the manifest gets counts, file hashes and the package version."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts: dict[str, Sequence[Any]] = {
        "train": train,
        "support": support,
        "query": query,
        "completions": completions,
    }
    files: dict[str, dict[str, Any]] = {}
    for split, records in parts.items():
        name = BENCHMARK_FILES[split]
        count = write_jsonl(out / name, (r.to_json() for r in records))
        files[name] = {"records": count, "sha256": sha256_file(out / name)}
    full = {
        **manifest,
        "format": "persalign-benchmark/1",
        "persalign_version": __version__,
        "files": files,
        "counts": benchmark_counts(parts),
    }
    write_json(out / "manifest.json", full)
    return full


def benchmark_counts(parts: dict[str, Sequence[Any]]) -> dict[str, int]:
    train_users = {p.user for p in parts["train"]}
    adapt_users = {p.user for p in [*parts["support"], *parts["query"]]}
    return {
        "train_users": len(train_users),
        "adapt_users": len(adapt_users),
        **{f"{split}_preferences": len(parts[split]) for split in SPLITS},
        "completions": len(parts["completions"]),
    }


def load_benchmark(path: str | Path) -> Benchmark:
    """Read a benchmark folder written by :func:`write_benchmark` (or by hand, same layout)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError("not a benchmark folder (build one with `persalign data build`)", root)
    manifest_path = root / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    if not isinstance(manifest, dict):
        raise DataError("manifest must be a JSON object", manifest_path)
    splits: dict[str, list[Any]] = {}
    for split, name in BENCHMARK_FILES.items():
        file = root / name
        if split == "completions" and not file.exists():
            splits[split] = []
            continue
        cls = Completion if split == "completions" else Preference
        records = []
        for line_no, obj in read_jsonl(file, cls.REQUIRED, kind=cls.__name__.lower()):
            for key in cls.REQUIRED:
                if not isinstance(obj[key], str):
                    raise DataError(f"field {key!r} must be a string", file, line_no)
            if obj.get("meta") is not None and not isinstance(obj["meta"], dict):
                kind = type(obj["meta"]).__name__
                raise DataError(f"field 'meta' must be a JSON object, got {kind}", file, line_no)
            records.append(cls.from_json(obj))
        splits[split] = records
    adapt_users = {p.user for p in splits["support"] + splits["query"]}
    overlap = {p.user for p in splits["train"]} & adapt_users
    if overlap:
        some = ", ".join(sorted(overlap)[:3])
        raise DataError(f"users are both train and adaptation users: {some}", root)
    return Benchmark(
        name=str(manifest.get("name", root.name)),
        train=tuple(splits["train"]),
        support=tuple(splits["support"]),
        query=tuple(splits["query"]),
        completions=tuple(splits["completions"]),
        manifest=manifest,
    )
