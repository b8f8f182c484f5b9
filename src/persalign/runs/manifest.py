"""``runs/<name>/manifest.json``: what was run, with what code, on what machine.

    write_manifest(Path("runs/demo"), config, backend="local", jobs=jobs)
    # {'name': 'demo', 'config': {...}, 'config_hash': '9f2c...', 'git_commit': '1a2b...', ...}

Holds the resolved config and its hash, the git commit (and whether the tree had local changes),
the versions of the packages that matter, the hardware, the backend, and the ids of every cell
and model of the plan. ``created`` is kept from the first run of the folder; ``updated`` is the
latest. Neither is a result: the report never reads them into a table.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from persalign.io import read_json, write_json
from persalign.runs.config import RunConfig, config_hash, dump_config

log = logging.getLogger(__name__)
PACKAGES = (
    "persalign",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "sentence-transformers",
    "rouge-score",
    "bert-score",
    "scipy",
    "numpy",
    "pydantic",
    "ray",
)


def git_commit(path: Path | None = None) -> dict[str, Any]:
    """{"commit": sha or None, "dirty": bool or None} of the repository holding the package."""
    root = path or Path(__file__).resolve().parents[3]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict[str, Any]:

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "gpus": [],
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        info["memory_gib"] = None
    if info["cuda"]:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["gpus"].append(
                {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}
            )
    return info


def write_manifest(
    run_dir: Path,
    config: RunConfig,
    *,
    backend: dict[str, Any],
    cells: list[str],
    models: list[str],
) -> dict[str, Any]:
    """Write (or update) the run's manifest atomically; returns it."""
    path = run_dir / "manifest.json"
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    previous = read_json(path) if path.is_file() else {}
    digest = config_hash(config)
    if previous and previous.get("config_hash") != digest:
        log.warning(
            "%s was run with another config before: cells whose inputs changed are redone", run_dir
        )
    git = git_commit()
    manifest = {
        "format": "persalign-run/1",
        "name": config.name,
        "config": dump_config(config),
        "config_hash": digest,
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "versions": versions(),
        "hardware": hardware(),
        "backend": backend,
        "cells": cells,
        "models": models,
        "created": previous.get("created", now),
        "updated": now,
    }
    write_json(path, manifest)
    return manifest
