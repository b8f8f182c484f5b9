import json
from pathlib import Path

import pytest

from persalign.data.benchmark_folder import load_benchmark, write_benchmark
from persalign.errors import DataError
from persalign.io import SkipReport, atomic_write, read_json, read_jsonl, sha256_file
from persalign.types import Completion, Preference


def _pref(i: int, user: str) -> Preference:
    return Preference(f"{user}/{i}", user, f"prompt {i}", f"good {i}", f"bad {i}", {"k": i})


def test_read_jsonl_names_file_and_line_of_malformed_json(tmp_path: Path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n', encoding="utf-8")
    rows = read_jsonl(path)
    assert next(rows) == (1, {"a": 1})
    with pytest.raises(DataError) as info:
        next(rows)
    assert str(info.value).startswith(f"{path}:3: malformed JSON")


def test_read_jsonl_missing_field_and_non_object(tmp_path: Path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"user": "u"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"x.jsonl:1: preference is missing field\(s\): prompt"):
        list(read_jsonl(path, ("user", "prompt"), kind="preference"))
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.jsonl:1: expected a JSON object, got list"):
        list(read_jsonl(path))
    with pytest.raises(DataError, match="no such file"):
        list(read_jsonl(tmp_path / "missing.jsonl"))


def test_read_json_reports_line(tmp_path: Path):
    path = tmp_path / "a.json"
    path.write_text('{\n  "a": 1,\n  "b": \n}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"a.json:4: malformed JSON"):
        read_json(path)


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path):
    path = tmp_path / "f.txt"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_write(path) as handle:
        handle.write("new")
        raise RuntimeError("boom")
    assert path.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary left behind


def test_skip_report_counts_and_caps_examples():
    skips = SkipReport()
    for i in range(8):
        skips.add("empty title", f"p{i}")
    skips.add("empty abstract", count=3)
    other = SkipReport()
    other.add("empty title", "q")
    skips.merge(other)
    out = skips.to_json()
    assert out["empty title"]["count"] == 9
    assert out["empty title"]["examples"] == ["p0", "p1", "p2", "p3", "p4"]
    assert out["empty abstract"] == {"count": 3, "examples": []}
    assert skips.total == 12


def test_benchmark_round_trip_with_hashes(tmp_path: Path):
    train = [_pref(i, "t1") for i in range(3)]
    support = [_pref(i, "a1") for i in range(2)]
    query = [_pref(i + 2, "a1") for i in range(2)]
    completions = [Completion(q.id, q.user, q.prompt, q.chosen) for q in query]
    manifest = write_benchmark(
        tmp_path / "b",
        train=train,
        support=support,
        query=query,
        completions=completions,
        manifest={"name": "toy"},
    )
    assert manifest["counts"] == {
        "train_users": 1,
        "adapt_users": 1,
        "train_preferences": 3,
        "support_preferences": 2,
        "query_preferences": 2,
        "completions": 2,
    }
    for name, info in manifest["files"].items():
        assert info["sha256"] == sha256_file(tmp_path / "b" / name)
    bench = load_benchmark(tmp_path / "b")
    assert bench.name == "toy"
    assert list(bench.train) == train and list(bench.query) == query
    assert bench.train[0].meta == {"k": 0}
    assert [u.user for u in bench.users()] == ["t1", "a1"]
    assert [len(u.support) for u in bench.adapt_users()] == [2]
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["name"] == "toy"


def test_load_benchmark_rejects_overlapping_users_and_bad_types(tmp_path: Path):
    write_benchmark(
        tmp_path / "b",
        train=[_pref(0, "u")],
        support=[_pref(1, "u")],
        query=[_pref(2, "v")],
        manifest={},
    )
    with pytest.raises(DataError, match="both train and adaptation users: u"):
        load_benchmark(tmp_path / "b")
    (tmp_path / "b" / "support.jsonl").write_text(
        json.dumps({"id": 1, "user": "v", "prompt": "p", "chosen": "c", "rejected": "r"}) + "\n"
    )
    with pytest.raises(DataError, match=r"support.jsonl:1: field 'id' must be a string"):
        load_benchmark(tmp_path / "b", verify=False)  # edited by hand
    with pytest.raises(DataError, match="not a benchmark folder"):
        load_benchmark(tmp_path / "nope")
