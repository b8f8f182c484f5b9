"""Benchmark folders: train/support/query/completions JSON lines plus manifest.json.

    write_benchmark("out/pref-acl", train=..., support=..., query=..., completions=...,
                    manifest={"source": ...})
    bench = load_benchmark("out/pref-acl")          # every file checked against the manifest
    bench = load_benchmark("edited/", verify=False)  # a folder edited by hand
    for path, problem in benchmark_differences("out/pref-acl"): ...   # persalign data verify

A simulated-users benchmark (``persalign data build sim``) also has ``true_reward.json``, listed
and hashed in the manifest like the data files; ``load_benchmark`` attaches it as
``bench.true_reward`` (persalign.data.true_reward.TrueReward).

Every problem in a file raises :class:`~persalign.errors.DataError` naming the file and line.
Loading requires ``manifest.json`` and checks each file's sha256 against it, so a folder that a
build left half-written, or that was changed since, is refused with the file it names.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persalign import __version__
from persalign.data.true_reward import FILE as TRUE_REWARD_FILE
from persalign.data.true_reward import TrueReward
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
MANIFEST = "manifest.json"
NO_VERIFY = "--no-verify loads it as it is"


def write_benchmark(
    out_dir: str | Path,
    *,
    train: Sequence[Preference],
    support: Sequence[Preference],
    query: Sequence[Preference],
    completions: Sequence[Completion] = (),
    manifest: dict[str, Any],
    json_files: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the benchmark layout; the manifest gets counts, file hashes and the package version.

    ``json_files``: extra JSON files ({name: object}, e.g. ``true_reward.json``), written and
    hashed in the manifest like the data files."""
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
    for name, obj in sorted((json_files or {}).items()):
        write_json(out / name, obj)
        files[name] = {"sha256": sha256_file(out / name)}
    full = {
        **manifest,
        "format": "persalign-benchmark/1",
        "persalign_version": __version__,
        "files": files,
        "counts": benchmark_counts(parts),
    }
    write_json(out / MANIFEST, full)
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


def benchmark_differences(path: str | Path) -> list[tuple[Path, str]]:
    """Every way the folder differs from its manifest, as (file, problem); empty when whole.

    A missing or unreadable manifest is one difference; otherwise each file the manifest lists
    (and each benchmark file it does not) is hashed and compared with its recorded sha256."""
    root = Path(path)
    if not root.is_dir():
        raise DataError("not a benchmark folder (build one with `persalign data build`)", root)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return [(manifest_path, "missing: a benchmark folder needs the manifest its build wrote")]
    manifest = read_json(manifest_path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return [(manifest_path, "records no file hashes ('files'); rebuild the benchmark")]
    out = []
    for name in sorted({*files, *BENCHMARK_FILES.values()}):
        file, entry = root / name, files.get(name)
        if Path(name).name != name or name in ("", ".", ".."):  # never read outside the folder
            out.append((manifest_path, f"lists {name!r}, which is not a file name"))
        elif entry is None:
            if file.exists():
                out.append((file, f"not listed in {MANIFEST}"))
            elif name != BENCHMARK_FILES["completions"]:
                out.append((file, "missing"))
        elif not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            out.append((manifest_path, f"no sha256 recorded for {name}"))
        elif not file.is_file():
            out.append((file, f"missing (listed in {MANIFEST})"))
        elif sha256_file(file) != entry["sha256"]:
            out.append((file, f"sha256 differs from {MANIFEST} (changed since the build)"))
    return out


def verify_benchmark(path: str | Path, hint: str = NO_VERIFY) -> None:
    """DataError naming the first file that differs from the manifest (and how many do)."""
    differences = benchmark_differences(path)
    if differences:
        file, problem = differences[0]
        more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
        raise DataError(
            f"{problem}{more}; `persalign data verify {path}` lists every difference, {hint}",
            file,
        )


def load_benchmark(path: str | Path, *, verify: bool = True) -> Benchmark:
    """Read a benchmark folder written by :func:`write_benchmark`; with ``verify`` (default)
    every file must match the sha256 its manifest records (``verify=False``: a hand-edited
    folder, manifest optional)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError("not a benchmark folder (build one with `persalign data build`)", root)
    if verify:
        verify_benchmark(root)
    manifest_path = root / MANIFEST
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
        true_reward=_true_reward(root),
    )


def _true_reward(root: Path) -> TrueReward | None:
    """The simulated users' known reward when the folder has one (checked with the others)."""
    file = root / TRUE_REWARD_FILE
    return TrueReward.from_json(read_json(file), file) if file.is_file() else None
