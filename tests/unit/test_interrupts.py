"""Ctrl-C at any point of ``persalign data build``: ``interrupted``, exit 130, whole or nothing.

Each run is a fresh ``python -m persalign.cli data build jsonl ... --force`` over an existing
benchmark, with ``PERSALIGN_TEST_INTERRUPT_AT`` naming where the process sends itself SIGINT
(``persalign.io.interrupt_point``), so every run is interrupted at exactly that point:

- ``starting``: the command's modules (torch, ...) still being imported, before ``main``;
- ``split``: the source read, nothing written yet;
- ``folder-whole``: the new folder complete beside ``--out``, not yet renamed into place;
- ``folder-in-place``: renamed into place, the old one not yet removed, nothing printed;
- ``atexit``: the command done and its line printed, Python's exit handlers running (where
  torch's ``_del_library`` once turned a Ctrl-C into a traceback and exit 0).

Before the rename the old benchmark must be there byte for byte; from the rename on, the new
one, whole (it verifies against its manifest). Nothing temporary is left beside ``--out``.
A fresh interpreter costs ~10 s of imports, so there are five runs, no more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from persalign.data.benchmark_folder import benchmark_differences, load_benchmark
from persalign.io import INTERRUPT_ENV

from .test_cli import toy_benchmark

BEFORE_RENAME = {
    "starting": True,
    "split": True,
    "folder-whole": True,
    "folder-in-place": False,
    "atexit": False,
}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("point", list(BEFORE_RENAME))
def test_ctrl_c_at_any_point_of_a_build_is_interrupted_130_and_whole(
    point: str, tmp_path: Path
) -> None:
    rows = [
        {"user": f"u{u}", "prompt": f"p{i}", "chosen": f"c{u}{i}", "rejected": "r"}
        for u in range(5)
        for i in range(4)
    ]
    source = tmp_path / "prefs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = toy_benchmark(tmp_path / "out")
    old = _files(out)
    argv = ["data", "build", "jsonl", "--source", str(source), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "persalign.cli", *argv, "--min-items", "2", "--force"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, INTERRUPT_ENV: point},
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert lines[-1] == "interrupted", proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "prefs.jsonl"]  # no .out.*
    if BEFORE_RENAME[point]:
        assert _files(out) == old
        assert "wrote" not in proc.stdout
    else:
        assert _files(out) != old
        assert benchmark_differences(out) == []
        bench = load_benchmark(out)
        assert len(bench.train) + len(bench.support) + len(bench.query) == len(rows)
        assert ("wrote" in proc.stdout) == (point == "atexit")
