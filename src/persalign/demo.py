"""The embedded default run (``make demo`` / ``persalign demo``).

    >>> stats = run_demo("runs/demo")              # reads configs/demo.yaml

Until the experiment runner lands, the demo builds a small Pref-ACL benchmark from the ACL
Anthology folder in ``PERSALIGN_ACL_DIR`` (downloaded into the cache on a connected machine when
unset) and returns its statistics. A finished build with the same options is reused.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from persalign.data import BUILDERS, BuildOptions, load_benchmark
from persalign.data.io import read_json
from persalign.data.stats import benchmark_stats
from persalign.errors import ConfigError

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def load_demo_config(path: str | Path | None = None) -> tuple[str, BuildOptions]:
    """(dataset name, build options) from the demo YAML; unknown keys are errors."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"demo config not found: {path} (pass --config)")
    with path.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    bench = raw.get("benchmark")
    if not isinstance(bench, dict) or "name" not in bench:
        raise ConfigError(f"{path}: needs a 'benchmark' mapping with a 'name'")
    options = {k: v for k, v in bench.items() if k != "name"}
    known = {f.name for f in dataclasses.fields(BuildOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) under 'benchmark': {', '.join(unknown)}")
    if "include" in options:
        options["include"] = tuple(options["include"])
    if options.get("source") is None:
        options["source"] = os.environ.get("PERSALIGN_ACL_DIR")
    return bench["name"], BuildOptions(**options)


def run_demo(out: str | Path, config: str | Path | None = None) -> dict[str, Any]:
    """Build (or reuse) the demo benchmark under ``out/benchmark`` and return its statistics."""
    name, options = load_demo_config(config)
    folder = Path(out) / "benchmark"
    manifest_path = folder / "manifest.json"
    wanted = {**dataclasses.asdict(options), "include": list(options.include)}
    if manifest_path.is_file() and read_json(manifest_path).get("options") == wanted:
        log.info("reusing the finished demo benchmark in %s", folder)
    else:
        BUILDERS.get(name)(options, folder)
    return benchmark_stats(load_benchmark(folder))
