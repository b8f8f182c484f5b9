""".ci/run refuses to run the suite without the shared data, so real-data tests never skip in CI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_run_fails_loudly_without_shared_data(tmp_path: Path):
    env = {**os.environ, "PERSALIGN_SHARED_DATA": str(tmp_path / "missing")}
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "shared data folder" in proc.stderr and "missing" in proc.stderr


def test_makefile_treats_no_tests_as_failure():
    # `make test` runs pytest directly: its exit code 5 ("no tests collected") fails the target.
    text = (ROOT / "Makefile").read_text()
    test_recipe = text.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "pytest" in test_recipe and "|| true" not in test_recipe
