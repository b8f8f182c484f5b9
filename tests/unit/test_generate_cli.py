"""``persalign generate``: every decoder from the CLI, resumable, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persalign.data.benchmark_folder import write_benchmark

from .rewards_synthetic import two_group_task
from .test_cli import run


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    train, new = two_group_task(per_user=4, n_train=2, n_new=2, support=4, query=3)
    write_benchmark(
        tmp_path / "bench",
        train=train,
        support=[p for s, _ in new.values() for p in s],
        query=[p for _, q in new.values() for p in q],
        manifest={"name": "synthetic"},
    )
    return tmp_path / "bench"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("decoder", ["zero-shot", "icl", "icl-rag"])
def test_generate_writes_one_line_per_query_and_resumes(decoder, bench, tiny_lm, tmp_path, capsys):
    out = tmp_path / "gen.jsonl"
    argv = [
        "generate",
        "--benchmark",
        str(bench),
        "--decoder",
        decoder,
        "--policy",
        tiny_lm,
        "--out",
        str(out),
        "--max-new-tokens",
        "4",
        "--shots",
        "2",
    ]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    first = lines(out)
    assert len(first) == 6
    assert {(g["user"], g["id"]) for g in first} == {
        (f"new{u}", f"new{u}/{i}") for u in range(2) for i in range(4, 7)
    }
    assert all(len(g["tokens"]) <= 4 and g["decoder"] == decoder for g in first)
    # a torn last line (a killed run) is cut and that output regenerated; others are kept
    text = out.read_text()
    out.write_text(text[: len(text) - 20])
    code, _, err = run(argv, capsys)
    assert code == 0, err
    again = lines(out)
    assert len(again) == 6 and again[:5] == first[:5]
    assert again[5]["id"] == first[5]["id"] and again[5]["tokens"] == first[5]["tokens"]


def test_generate_args_needs_a_reward_model_and_known_users(bench, tiny_lm, tmp_path, capsys):
    base = [
        "generate",
        "--benchmark",
        str(bench),
        "--policy",
        tiny_lm,
        "--out",
        str(tmp_path / "g.jsonl"),
    ]
    code, _, err = run([*base, "--decoder", "args"], capsys)
    assert code == 2 and "needs a reward model" in err
    code, _, err = run([*base, "--decoder", "zero-shot", "--users", "ghost"], capsys)
    assert code == 2 and "unknown adaptation user(s): ghost" in err
