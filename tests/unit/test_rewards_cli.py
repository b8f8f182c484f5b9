"""``persalign train`` and ``persalign evaluate rm`` end to end on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persalign.data.benchmark_folder import write_benchmark
from persalign.errors import ConfigError
from persalign.overrides import parse_overrides

from .rewards_synthetic import two_group_task
from .test_cli import run


@pytest.fixture
def synthetic_benchmark(tmp_path: Path) -> Path:
    train, new = two_group_task(per_user=6, n_train=4, n_new=2, support=4, query=4)
    support = [p for s, _ in new.values() for p in s]
    query = [p for _, q in new.values() for p in q]
    write_benchmark(
        tmp_path / "bench",
        train=train,
        support=support,
        query=query,
        manifest={"name": "synthetic"},
    )
    return tmp_path / "bench"


def test_train_then_evaluate_rm(synthetic_benchmark: Path, tiny_lm: str, tmp_path: Path, capsys):
    out = tmp_path / "model"
    code, stdout, err = run(
        [
            "train",
            "--benchmark",
            str(synthetic_benchmark),
            "--method",
            "global-rm",
            "--backbone",
            tiny_lm,
            "--out",
            str(out),
            "--max-steps",
            "5",
            "--set",
            "device=cpu",
            "--set",
            "batch_size=4",
        ],
        capsys,
    )
    assert code == 0, err
    for name in ("config.json", "weights.safetensors", "train_summary.json"):
        assert (out / name).is_file(), name
    log_lines = (out / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log_lines] == [1, 2, 3, 4, 5]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 5 and summary["pairs_per_second"] > 0
    assert summary["adapted_users"] == 2

    code, stdout, err = run(
        ["evaluate", "rm", "--model", str(out), "--benchmark", str(synthetic_benchmark), "--json"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert set(result["per_user"]) == {"new0", "new1"} and result["pairs"] == 8
    assert result["mean"] == pytest.approx(sum(result["per_user"].values()) / 2)


def test_train_rejects_unknown_config_keys(
    synthetic_benchmark: Path, tiny_lm: str, tmp_path: Path, capsys
):
    code, _, err = run(
        [
            "train",
            "--benchmark",
            str(synthetic_benchmark),
            "--method",
            "global-rm",
            "--backbone",
            tiny_lm,
            "--out",
            str(tmp_path / "m"),
            "--set",
            "lerning_rate=1",
        ],
        capsys,
    )
    assert code == 2
    assert "lerning_rate" in err and "Traceback" not in err


def test_parse_overrides_types_and_nesting():
    assert parse_overrides(["a=1", "b=1e-3", "c=true", "d=x", "e.f=[1, 2]"]) == {
        "a": 1,
        "b": 0.001,
        "c": True,
        "d": "x",
        "e": {"f": [1, 2]},
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])
