import json
from pathlib import Path

import pytest

from persalign.data.benchmark_folder import load_benchmark
from persalign.data.registry import BuildOptions
from persalign.data.splits import (
    read_split_file,
    split_items,
    split_users,
    write_preference_benchmark,
)
from persalign.errors import ConfigError, DataError
from persalign.io import SkipReport
from persalign.types import Preference


def test_split_users_paper_shape_else_80_20():
    users = [f"u{i:03d}" for i in range(700)]
    train, adapt = split_users(
        users, train_users=None, adapt_users=None, seed=0, paper_shape=(485, 126)
    )
    assert (len(train), len(adapt)) == (485, 126)
    assert not set(train) & set(adapt)
    train, adapt = split_users(
        users[:50], train_users=None, adapt_users=None, seed=0, paper_shape=(485, 126)
    )
    assert (len(train), len(adapt)) == (40, 10)
    again = split_users(users[:50], train_users=None, adapt_users=None, seed=0)
    assert again == (train, adapt)
    other = split_users(users[:50], train_users=None, adapt_users=None, seed=1)
    assert other != (train, adapt)


def test_split_users_explicit_counts_and_errors():
    users = [str(i) for i in range(10)]
    train, adapt = split_users(users, train_users=3, adapt_users=None, seed=0)
    assert (len(train), len(adapt)) == (3, 7)
    with pytest.raises(ConfigError, match="only 10 users qualify"):
        split_users(users, train_users=8, adapt_users=8, seed=0)


def test_split_items_random_and_time():
    items = list(range(9))
    support, query = split_items(items, fraction=0.5, seed=0, key="u")
    assert sorted(support + query) == items and not set(support) & set(query)
    assert len(support) == 4  # round(4.5) = 4 (banker's), query gets the rest
    s2, _ = split_items(items, fraction=0.5, seed=0, key="v")
    assert s2 != support  # the user key matters
    support, query = split_items(items, fraction=0.5, seed=0, key="u", order=lambda i: -i)
    assert query == [4, 3, 2, 1, 0]  # sorted by the order key, last ones in query
    one, two = split_items([1, 2], fraction=0.9, seed=0, key="u")
    assert len(one) == 1 and len(two) == 1
    with pytest.raises(ConfigError):
        split_items(items, fraction=1.0, seed=0, key="u")


def test_read_split_file_pal_keys_and_errors(tmp_path: Path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"summary_uids": ["a"], "summary_unseen_uids": ["b", "c"]}))
    assert read_split_file(path) == (["a"], ["b", "c"])
    path.write_text(json.dumps({"train": ["a"], "adapt": ["a"]}))
    with pytest.raises(DataError, match="both train and adaptation"):
        read_split_file(path)
    path.write_text(json.dumps({"foo": []}))
    with pytest.raises(DataError, match="found keys: foo"):
        read_split_file(path)


def _prefs(users: dict[str, int]) -> list[Preference]:
    return [
        Preference(f"{u}/{i}", u, f"p{i}", "c", "r", {"year": 2000 + i})
        for u, n in users.items()
        for i in range(n)
    ]


def test_write_preference_benchmark_split_file_counts_skips(tmp_path: Path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"seen": ["a", "ghost"], "unseen": ["b", "tiny"]}))
    prefs = _prefs({"a": 6, "b": 6, "c": 6, "tiny": 2})
    manifest = write_preference_benchmark(
        "toy",
        prefs,
        SkipReport(),
        BuildOptions(min_items=3, split_file=str(split), split="time"),
        tmp_path / "out",
        source={"kind": "test"},
    )
    assert manifest["train_user_ids"] == ["a"] and manifest["adapt_user_ids"] == ["b"]
    skipped = manifest["skipped"]
    assert skipped["split-file user not in the data"]["examples"] == ["ghost"]
    assert skipped["user not in the split file"]["examples"] == ["c"]
    assert skipped["user with fewer than 3 preferences"]["examples"] == ["tiny"]
    bench = load_benchmark(tmp_path / "out")
    assert [p.meta["year"] for p in bench.query] == [2003, 2004, 2005]  # most recent in query
    assert {p.id for p in bench.support} | {p.id for p in bench.query} == {
        p.id for p in prefs if p.user == "b"
    }


def test_max_items_caps_each_user_with_a_counted_seeded_sample(tmp_path: Path):
    prefs = _prefs({"a": 10, "b": 10, "c": 3})
    opts = BuildOptions(min_items=3, max_items=4, train_users=2, adapt_users=1)
    manifest = write_preference_benchmark(
        "toy", prefs, SkipReport(), opts, tmp_path / "x", source={}
    )
    bench = load_benchmark(tmp_path / "x")
    for user in bench.users():
        assert len([*user.train, *user.support, *user.query]) <= 4
    assert manifest["skipped"]["items beyond --max-items 4"]["count"] == 12
    write_preference_benchmark("toy", prefs, SkipReport(), opts, tmp_path / "y", source={})
    assert (tmp_path / "x/train.jsonl").read_bytes() == (tmp_path / "y/train.jsonl").read_bytes()


def test_max_query_keeps_a_counted_seeded_subset_of_each_query_set(tmp_path: Path):
    prefs = _prefs({"a": 10, "b": 10, "c": 12})
    full = BuildOptions(min_items=3, train_users=1, adapt_users=2)
    write_preference_benchmark("toy", prefs, SkipReport(), full, tmp_path / "full", source={})
    capped = BuildOptions(min_items=3, train_users=1, adapt_users=2, max_query=2)
    manifest = write_preference_benchmark(
        "toy", prefs, SkipReport(), capped, tmp_path / "cap", source={}
    )
    before, after = load_benchmark(tmp_path / "full"), load_benchmark(tmp_path / "cap")
    assert [p.id for p in after.support] == [p.id for p in before.support]  # support untouched
    assert [p.id for p in after.train] == [p.id for p in before.train]
    full_query = [p.id for p in before.query]
    kept = [p.id for p in after.query]
    assert kept == [i for i in full_query if i in set(kept)]  # a subset, in the original order
    for user in manifest["adapt_user_ids"]:
        assert len([p for p in after.query if p.user == user]) == 2
    dropped = manifest["skipped"]["query items beyond --max-query 2"]
    assert dropped["count"] == len(full_query) - len(kept) > 0
    assert manifest["options"]["max_query"] == 2
    write_preference_benchmark("toy", prefs, SkipReport(), capped, tmp_path / "again", source={})
    again = (tmp_path / "again/query.jsonl").read_bytes()
    assert (tmp_path / "cap/query.jsonl").read_bytes() == again


def test_min_items_default_is_filled_in_and_recorded(tmp_path: Path):
    manifest = write_preference_benchmark(
        "toy",
        _prefs({"a": 12, "b": 12, "c": 5}),
        SkipReport(),
        BuildOptions(),
        tmp_path,
        source={},
    )
    assert manifest["options"]["min_items"] == 10
    assert manifest["skipped"]["user with fewer than 10 preferences"]["examples"] == ["c"]
