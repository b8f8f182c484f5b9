"""Wall time and peak memory of building Pref-ACL from the whole ACL Anthology folder.

    python benchmarks/bench_build_acl.py [--source DIR] [--include GLOB ...]

Runs the build twice in fresh subprocesses: cold (an empty embedding cache) and warm (the cache
the cold run filled). Prints one JSON object. Targets (issue 2): cold under 10 minutes, warm under
1 minute, on 2 CPU cores. The source defaults to $PERSALIGN_SHARED_DATA/acl_anthology.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(source: str, include: list[str], out: str) -> None:
    """One build in this process; prints its own wall time, peak RSS and counts as JSON."""
    from persalign.data import BUILDERS, BuildOptions
    from persalign.logs import setup_logging

    setup_logging(0)
    start = time.perf_counter()
    manifest = BUILDERS.get("pref-acl")(BuildOptions(source=source, include=tuple(include)), out)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump(
        {
            "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak_mib),
            **manifest["counts"],
            "papers": manifest["source"]["papers"],
            "authors": manifest["source"]["authors"],
        },
        sys.stdout,
    )


def run_child(source: str, include: list[str], out: Path, cache: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", "--source", source, "--out", str(out)]
    for pattern in include:
        cmd += ["--include", pattern]
    env = {**os.environ, "PERSALIGN_CACHE": str(cache)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"build failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = os.environ.get("PERSALIGN_SHARED_DATA", str(Path(__file__).parents[2] / "shared/data"))
    parser.add_argument("--source", default=str(Path(shared) / "acl_anthology"))
    parser.add_argument("--include", action="append", default=[])
    parser.add_argument("--out")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.source, args.include, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cold = run_child(args.source, args.include, Path(tmp) / "cold", cache)
        warm = run_child(args.source, args.include, Path(tmp) / "warm", cache)
        identical = all(
            (Path(tmp) / "cold" / n).read_bytes() == (Path(tmp) / "warm" / n).read_bytes()
            for n in ("train.jsonl", "support.jsonl", "query.jsonl", "completions.jsonl")
        )
    result = {
        "benchmark": "build_pref_acl",
        "cpu_count": os.cpu_count(),
        "cold_seconds": cold["seconds"],
        "warm_seconds": warm["seconds"],
        "cold_peak_rss_mib": cold["peak_rss_mib"],
        "warm_peak_rss_mib": warm["peak_rss_mib"],
        "papers": cold["papers"],
        "authors": cold["authors"],
        "train_users": cold["train_users"],
        "adapt_users": cold["adapt_users"],
        "preferences": cold["train_preferences"]
        + cold["support_preferences"]
        + cold["query_preferences"],
        "cold_and_warm_identical": identical,
        "cold_under_10_min": cold["seconds"] < 600,
        "warm_under_1_min": warm["seconds"] < 60,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
