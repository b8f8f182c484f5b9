"""``persalign generate --decoder args`` resumes after kill -9 like the other decoders.

A child process runs ``persalign generate --decoder args`` and is killed with SIGKILL once it has
flushed 4 of the 6 outputs (it blocks on the 5th; no race). Rerunning the same command keeps the
4 finished lines byte for byte (their ``seconds`` too: not regenerated), writes only the other 2,
and the file equals an uninterrupted run's (``seconds`` aside).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import persalign.rewards as rewards

from .rewards_synthetic import write_two_group_benchmark
from .test_atomic_model_save import kill_when_ready
from .test_cli import run

CHILD = """
import pathlib, sys, time
from persalign.cli import generate
ready, calls, real = pathlib.Path(sys.argv[1]), [], generate.dumps
def dumps(obj):
    calls.append(obj)
    if len(calls) == 5:  # 4 lines written and flushed (2 batches of 2); stop for good
        ready.touch()
        time.sleep(120)
    return real(obj)
generate.dumps = dumps
from persalign.cli import main
main(sys.argv[2:])
"""


@pytest.fixture(scope="module")
def inputs(tiny_lm: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume")
    write_two_group_benchmark(root / "bench")  # 2 adaptation users x 3 query prompts
    rm = rewards.create("global-rm", backbone=tiny_lm, device="cpu", seed=0)
    rm.save(str(root / "rm"))
    return root / "bench", root / "rm"


def argv(bench: Path, rm: Path, policy: str, out: Path) -> list[str]:
    return [
        *("generate", "--benchmark", str(bench), "--decoder", "args", "--policy", policy),
        *("--reward", str(rm), "--lam", "1.0", "--k", "3", "--max-new-tokens", "5"),
        *("--batch-size", "2", "--out", str(out)),
    ]


def rows(path: Path) -> list[dict]:
    return [{**json.loads(line), "seconds": None} for line in path.read_text().splitlines()]


def test_args_generation_resumes_after_kill_9(inputs, tiny_lm: str, tmp_path: Path, capsys):
    bench, rm = inputs
    reference = tmp_path / "reference.jsonl"
    code, _, err = run(argv(bench, rm, tiny_lm, reference), capsys)
    assert code == 0, err
    assert len(rows(reference)) == 6

    out, ready = tmp_path / "gen.jsonl", tmp_path / "ready"
    kill_when_ready(CHILD, argv(bench, rm, tiny_lm, out), ready)
    finished = out.read_bytes().splitlines(keepends=True)
    assert len(finished) == 4

    code, stdout, err = run(argv(bench, rm, tiny_lm, out), capsys)
    assert code == 0, err
    said = " ".join(stdout.split())
    assert "wrote 2 outputs" in said and "(4 were already there)" in said
    assert out.read_bytes().splitlines(keepends=True)[:4] == finished  # kept, not regenerated
    assert rows(out) == rows(reference)
