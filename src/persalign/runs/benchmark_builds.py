"""The benchmarks of a run: a built folder as given, or built once into the run folder.

    prepared = prepare_benchmark("pref-acl", config.benchmarks["pref-acl"], Path("runs/demo"))
    prepared.path, prepared.hash      # runs/demo/benchmarks/pref-acl, sha256 of its files

A build goes to a temporary folder beside its destination and is renamed when complete, so a
killed build is never mistaken for a finished one. A finished build is reused when its recorded
options equal the config's (``run_build.json``) and its local input files are as they were when it
was built (``run_inputs.json``: each of ``source``, ``completions`` and ``split_file`` that is
set, a file by its sha256, a folder by the sorted (relative path, size, mtime_ns) of its files,
hidden ones aside); otherwise it is rebuilt, and the log says which input changed.

    input_fingerprint(options)   # {"source": {"path": ..., "kind": "file", "sha256": ...}, ...}
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persalign.data import BUILDERS, BuildOptions
from persalign.data.benchmark_folder import BENCHMARK_FILES, verify_benchmark
from persalign.data.registry import PATH_FIELDS
from persalign.errors import DataError
from persalign.io import folder_in_place, read_json, sha256_file, write_json
from persalign.runs.config import BenchmarkConfig
from persalign.runs.specs import BenchmarkBuildSpec

log = logging.getLogger(__name__)
BUILD_MARKER = "run_build.json"  # the build's options (its BenchmarkBuildSpec)
INPUTS_MARKER = "run_inputs.json"  # the fingerprint of its local input files
LISTED_FILES = 2000  # a folder's files are listed (to name the changed ones) up to this many


@dataclass(frozen=True)
class PreparedBenchmark:
    """A benchmark folder ready to load, and the hash of its content."""

    label: str
    path: Path
    hash: str


def benchmark_hash(folder: Path) -> str:
    """sha256 over the benchmark's data files (not its manifest, which records paths)."""
    digest = hashlib.sha256()
    for name in sorted(BENCHMARK_FILES.values()):
        file = folder / name
        digest.update(f"{name}:{sha256_file(file) if file.is_file() else '-'}\n".encode())
    return digest.hexdigest()


def _folder_fingerprint(root: Path) -> dict[str, Any]:
    """sha256 over the sorted (relative path, size, mtime_ns) of the files under ``root``
    (hidden files and folders aside): a stat per file, no reading, so cheap for large folders."""
    entries = []
    for parent, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(parent) / name
            stat = path.stat()
            entries.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    entries.sort()
    digest = hashlib.sha256("".join(f"{p}\t{s}\t{m}\n" for p, s, m in entries).encode())
    out: dict[str, Any] = {"kind": "folder", "files": len(entries), "digest": digest.hexdigest()}
    if len(entries) <= LISTED_FILES:
        out["entries"] = [list(e) for e in entries]
    return out


def input_fingerprint(options: BuildOptions) -> dict[str, dict[str, Any]]:
    """Per local input option that is set (``source``, ``completions``, ``split_file``): its
    path and a fingerprint of its content (a file: sha256; a folder: see _folder_fingerprint;
    anything else, e.g. a URL or a missing path: ``kind`` only)."""
    out = {}
    for key in PATH_FIELDS:
        value = getattr(options, key)
        if value is None:
            continue
        path = Path(value)
        if path.is_file():
            out[key] = {"path": value, "kind": "file", "sha256": sha256_file(path)}
        elif path.is_dir():
            out[key] = {"path": value, **_folder_fingerprint(path)}
        else:
            out[key] = {"path": value, "kind": "absent"}
    return out


def _what_changed(key: str, old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """One phrase naming the input ``key`` and how it changed since the build."""
    where = f"{key} {new['path']}"
    if old is None or old.get("kind") != new["kind"] or old.get("path") != new["path"]:
        return f"{where} (not the input of the build)"
    if new["kind"] != "folder" or "entries" not in old or "entries" not in new:
        return f"{where} (content changed)"
    before = {e[0]: e[1:] for e in old["entries"]}
    after = {e[0]: e[1:] for e in new["entries"]}
    files = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    return f"{where} ({', '.join(files[:3])}{more} changed)"


def changed_inputs(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the fingerprint recorded at build time and the current one."""
    changed = []
    for key in sorted(recorded.keys() | current.keys()):
        old, new = recorded.get(key), current.get(key)
        if new is None:
            changed.append(f"{key} (no longer set)")
        elif old != new:
            changed.append(_what_changed(key, old, new))
    return changed


def _reusable(label: str, folder: Path, wanted: BenchmarkBuildSpec, inputs: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a finished build of ``wanted`` from these very inputs."""
    marker = folder / BUILD_MARKER
    if not marker.is_file() or read_json(marker) != wanted.to_json():
        return False
    recorded = folder / INPUTS_MARKER
    if not recorded.is_file():
        log.info("rebuilding benchmark %s: %s records no input fingerprint", label, folder)
        return False
    changed = changed_inputs(read_json(recorded), inputs)
    if changed:
        log.info(
            "rebuilding benchmark %s: input changed since its build: %s", label, "; ".join(changed)
        )
        return False
    return True


def prepare_benchmark(
    label: str, config: BenchmarkConfig, run_dir: Path, *, verify: bool = True
) -> PreparedBenchmark:
    """The benchmark's folder, building it under ``run_dir/benchmarks/<label>`` if needed.
    ``verify`` (the run config's ``verify``): a given ``path`` must match its manifest."""
    if config.path is not None:
        folder = Path(config.path)
        if not (folder / BENCHMARK_FILES["train"]).is_file():
            raise DataError("not a benchmark folder (no train.jsonl)", folder)
        if verify:  # whole, as its manifest records, before any model loads
            verify_benchmark(
                folder,
                "rebuild it with `persalign data build`, or run with `verify: false` "
                "(--no-verify) to load it as it is",
            )
        return PreparedBenchmark(label, folder, benchmark_hash(folder))
    dataset = config.dataset or label
    builder = BUILDERS.get(dataset)
    folder = run_dir / "benchmarks" / label
    wanted = BenchmarkBuildSpec(dataset=dataset, **config.build_options().model_dump())
    inputs = input_fingerprint(wanted.options())  # before the build reads them
    if _reusable(label, folder, wanted, inputs):
        log.info("reusing the built benchmark %s in %s", label, folder)
        return PreparedBenchmark(label, folder, benchmark_hash(folder))
    log.info("building benchmark %s (%s) into %s", label, dataset, folder)
    with folder_in_place(folder) as tmp:
        builder(wanted.options(), tmp)
        write_json(tmp / INPUTS_MARKER, inputs)
        write_json(tmp / BUILD_MARKER, wanted.to_json())
    return PreparedBenchmark(label, folder, benchmark_hash(folder))
