"""The benchmarks of a run: a built folder as given, or built once into the run folder.

    prepared = prepare_benchmark("pref-acl", config.benchmarks["pref-acl"], Path("runs/demo"))
    prepared.path, prepared.hash      # runs/demo/benchmarks/pref-acl, sha256 of its files

A build goes to a temporary folder beside its destination and is renamed when complete, so a
killed build is never mistaken for a finished one. A finished build whose recorded options equal
the config's is reused; different options rebuild it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from persalign.data import BUILDERS
from persalign.data.benchmark_folder import BENCHMARK_FILES, verify_benchmark
from persalign.errors import DataError
from persalign.io import folder_in_place, read_json, sha256_file, write_json
from persalign.runs.config import BenchmarkConfig
from persalign.runs.specs import BenchmarkBuildSpec

log = logging.getLogger(__name__)


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


def prepare_benchmark(label: str, config: BenchmarkConfig, run_dir: Path) -> PreparedBenchmark:
    """The benchmark's folder, building it under ``run_dir/benchmarks/<label>`` if needed."""
    if config.path is not None:
        folder = Path(config.path)
        if not (folder / BENCHMARK_FILES["train"]).is_file():
            raise DataError("not a benchmark folder (no train.jsonl)", folder)
        # whole, as its manifest records, before any model loads
        verify_benchmark(folder, "rebuild it with `persalign data build` (a run always verifies)")
        return PreparedBenchmark(label, folder, benchmark_hash(folder))
    dataset = config.dataset or label
    builder = BUILDERS.get(dataset)
    folder = run_dir / "benchmarks" / label
    wanted = BenchmarkBuildSpec(dataset=dataset, **config.build_options().model_dump())
    marker = folder / "run_build.json"
    if marker.is_file() and read_json(marker) == wanted.to_json():
        log.info("reusing the built benchmark %s in %s", label, folder)
        return PreparedBenchmark(label, folder, benchmark_hash(folder))
    log.info("building benchmark %s (%s) into %s", label, dataset, folder)
    with folder_in_place(folder) as tmp:
        builder(wanted.options(), tmp)
        write_json(tmp / "run_build.json", wanted.to_json())
    return PreparedBenchmark(label, folder, benchmark_hash(folder))
