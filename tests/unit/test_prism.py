"""PRISM loader and builder, on fixtures written in the real schema (the shared data has ids only).

The structure test takes real users, conversations and per-conversation response counts from
``prism/conversation_user_ids.csv`` and ``prism/model_response_user_ids.csv``, writes text-free
stand-ins in the ``conversations.jsonl`` schema, and checks the per-user pair counts.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from persalign.data.benchmark_folder import load_benchmark
from persalign.data.prism import (
    HUB_CONFIG,
    HUB_ID,
    PAPER_SHAPE,
    build_prism,
    load_prism,
    prism_transcript,
)
from persalign.data.registry import BUILDERS, BuildOptions
from persalign.errors import DataError


def _conversation(
    conv_id: str,
    user: str,
    sizes: list[int],
    chosen: dict[int, list[int]] | None = None,
    texts: dict[tuple[int, int], str] | None = None,
) -> dict[str, Any]:
    """A conversation with ``sizes[t]`` rated responses at turn t; response 0 is chosen unless
    ``chosen`` says otherwise; ``texts[(turn, i)]`` overrides a response's text (i = -1: the
    user's message)."""
    chosen = chosen or {}
    texts = texts or {}
    history: list[dict[str, Any]] = []
    for turn, size in enumerate(sizes):
        user_text = texts.get((turn, -1), f"{conv_id} user message {turn}")
        history.append({"turn": turn, "role": "user", "content": user_text})
        for i in range(size):
            history.append(
                {
                    "turn": turn,
                    "role": "model",
                    "content": texts.get((turn, i), f"{conv_id} turn {turn} response {i}"),
                    "model_name": f"model-{i}",
                    "model_provider": "provider",
                    "score": 90 - 10 * i,
                    "if_chosen": i in chosen.get(turn, [0]),
                    "within_turn_id": i,
                }
            )
    return {
        "conversation_id": conv_id,
        "user_id": user,
        "conversation_type": "unguided",
        "opening_prompt": history[0]["content"],
        "conversation_history": history,
    }


def _write(folder: Path, records: list[Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = (r if isinstance(r, str) else json.dumps(r) + "\n" for r in records)
    (folder / "conversations.jsonl").write_text("".join(lines))
    return folder


def _turn_sizes(responses: int) -> list[int]:
    """PRISM's layout: up to four responses to the opening prompt, then two per later turn.
    An odd total means one opening response was missing (3), so the later turns stay pairs."""
    first = 3 if responses % 2 else 4
    return [first] + [2] * ((responses - first) // 2)


def _real_structure(shared_data: Path, n_users: int | None) -> list[tuple[str, str, list[int]]]:
    prism = shared_data / "prism"
    with (prism / "model_response_user_ids.csv").open(newline="") as handle:
        responses = Counter(row["conversation_id"] for row in csv.DictReader(handle))
    with (prism / "conversation_user_ids.csv").open(newline="") as handle:
        conversations = [(r["conversation_id"], r["user_id"]) for r in csv.DictReader(handle)]
    users = list(dict.fromkeys(user for _, user in conversations))
    keep = set(users if n_users is None else users[:n_users])
    return [(c, u, _turn_sizes(responses[c])) for c, u in conversations if u in keep]


def test_real_id_structure_gives_expected_pairs_per_user(shared_data: Path, tmp_path: Path) -> None:
    structure = _real_structure(shared_data, n_users=30)
    folder = _write(tmp_path / "prism", [_conversation(c, u, s) for c, u, s in structure])
    prefs, skips, source = load_prism(folder, progress=False)

    expected: Counter[str] = Counter()
    for _, user, sizes in structure:
        expected[user] += sum(size - 1 for size in sizes)
    assert len(expected) == 30
    assert Counter(p.user for p in prefs) == expected
    assert len({p.id for p in prefs}) == len(prefs)
    assert {p.meta["conversation_id"] for p in prefs} == {c for c, _, _ in structure}
    assert skips.total == 0
    assert source["files"][0]["preferences"] == len(prefs)


@pytest.mark.integration  # about 5 s: 8,011 conversations, 41k pairs
def test_full_real_structure_matches_source_figures(shared_data: Path, tmp_path: Path) -> None:
    """All 1,396 users: pairs per user 3 / 29 / 77 and about 41k pairs (SOURCE.md), and the
    builder takes the paper's 1,232 / 139 users when all qualify."""
    structure = _real_structure(shared_data, n_users=None)
    folder = _write(tmp_path / "prism", [_conversation(c, u, s) for c, u, s in structure])
    prefs, _, _ = load_prism(folder, progress=False)
    per_user = sorted(Counter(p.user for p in prefs).values())
    assert len(per_user) == 1396
    assert (per_user[0], per_user[len(per_user) // 2], per_user[-1]) == (3, 29, 77)
    assert 40_000 < len(prefs) < 42_000

    manifest = build_prism(BuildOptions(source=str(folder), min_items=1), tmp_path / "out")
    shape = (len(manifest["train_user_ids"]), len(manifest["adapt_user_ids"]))
    assert shape == PAPER_SHAPE == (1232, 139)


def test_prompt_is_the_history_with_chosen_responses(tmp_path: Path) -> None:
    record = _conversation("c1", "u1", [4, 2, 2], chosen={0: [2], 1: [1], 2: [0]})
    prefs, _, _ = load_prism(_write(tmp_path, [record]), progress=False)
    assert [p.id for p in prefs] == ["c1:0:0", "c1:0:1", "c1:0:3", "c1:1:0", "c1:2:1"]
    last = prefs[-1]
    messages = [
        {"role": "user", "content": "c1 user message 0"},
        {"role": "assistant", "content": "c1 turn 0 response 2"},
        {"role": "user", "content": "c1 user message 1"},
        {"role": "assistant", "content": "c1 turn 1 response 1"},
        {"role": "user", "content": "c1 user message 2"},
    ]
    assert last.meta["messages"] == messages
    assert last.prompt == (
        "User: c1 user message 0\n\nAssistant: c1 turn 0 response 2\n\n"
        "User: c1 user message 1\n\nAssistant: c1 turn 1 response 1\n\n"
        "User: c1 user message 2\n\nAssistant:"
    )
    assert last.prompt == prism_transcript(messages)
    assert (last.chosen, last.rejected) == ("c1 turn 2 response 0", "c1 turn 2 response 1")
    assert prefs[0].prompt == "User: c1 user message 0\n\nAssistant:"
    assert prefs[0].chosen == "c1 turn 0 response 2"
    assert prefs[0].meta["scores"] == {"chosen": 70, "rejected": 90}
    assert prefs[0].meta["models"] == {"chosen": "model-2", "rejected": "model-0"}
    assert prefs[0].meta["turn"] == 0 and prefs[0].meta["conversation_type"] == "unguided"


def test_turn_with_two_chosen_is_skipped_with_the_rest(tmp_path: Path) -> None:
    records = [
        _conversation("c1", "u1", [4, 2, 2], chosen={1: [0, 1]}),
        _conversation("c2", "u1", [4, 2], chosen={1: []}),
    ]
    prefs, skips, _ = load_prism(_write(tmp_path, records), progress=False)
    assert [p.id for p in prefs] == ["c1:0:1", "c1:0:2", "c1:0:3", "c2:0:1", "c2:0:2", "c2:0:3"]
    assert skips.counts == {
        "turn without exactly one chosen response": 2,
        "turn after an ambiguous turn (history unknown)": 1,
    }


def test_empty_texts_are_skipped_and_counted(tmp_path: Path) -> None:
    records = [
        _conversation("c1", "u1", [4, 2], texts={(0, 3): "  ", (1, 0): ""}),
        _conversation("c2", "u1", [4], texts={(0, -1): " "}),
        _conversation("c3", "u1", [2, 1], texts={(0, 1): "c3 turn 0 response 0"}),
        _conversation("c4", "", [4]),
    ]
    prefs, skips, _ = load_prism(_write(tmp_path, records), progress=False)
    assert [p.id for p in prefs] == ["c1:0:1", "c1:0:2"]
    assert skips.counts == {
        "empty response text": 2,  # c1 turn 0's response 3; c1 turn 1's chosen response
        "empty user message": 3,
        "identical chosen and rejected responses": 1,
        "turn with a single rated response (no pair)": 1,
        "conversation with an empty user_id": 1,
    }


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    folder = _write(tmp_path, [_conversation("c1", "u1", [2]), "{not json\n"])
    with pytest.raises(DataError) as err:
        load_prism(folder, progress=False)
    assert "conversations.jsonl:2" in str(err.value)


def test_missing_turn_field_is_an_error(tmp_path: Path) -> None:
    record = _conversation("c1", "u1", [2])
    del record["conversation_history"][2]["if_chosen"]
    with pytest.raises(DataError) as err:
        load_prism(_write(tmp_path, [record]), progress=False)
    assert "conversation_history[2]" in str(err.value) and "if_chosen" in str(err.value)
    assert "conversations.jsonl:1" in str(err.value)


def test_missing_record_field_and_repeats_are_errors(tmp_path: Path) -> None:
    record = _conversation("c1", "u1", [2])
    del record["user_id"]
    with pytest.raises(DataError, match="user_id"):
        load_prism(_write(tmp_path / "a", [record]), progress=False)
    twice = [_conversation("c1", "u1", [2]), _conversation("c1", "u2", [2])]
    with pytest.raises(DataError, match="repeats"):
        load_prism(_write(tmp_path / "b", twice), progress=False)


def test_build_splits_users_and_items(shared_data: Path, tmp_path: Path) -> None:
    structure = _real_structure(shared_data, n_users=30)
    folder = _write(tmp_path / "prism", [_conversation(c, u, s) for c, u, s in structure])
    options = BuildOptions(source=str(folder), min_items=1, seed=0)
    manifest = BUILDERS.get("prism")(options, tmp_path / "a")
    build_prism(options, tmp_path / "b")
    for name in ("train.jsonl", "support.jsonl", "query.jsonl", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (len(manifest["train_user_ids"]), len(manifest["adapt_user_ids"])) == (24, 6)

    prefs, _, _ = load_prism(folder, progress=False)
    bench = load_benchmark(tmp_path / "a")
    assert not {p.user for p in bench.train} & {p.user for p in bench.support + bench.query}
    for data in bench.adapt_users():
        support, query = {p.id for p in data.support}, {p.id for p in data.query}
        assert not support & query
        assert support | query == {p.id for p in prefs if p.user == data.user}
    assert bench.support[0].meta["messages"][-1]["role"] == "user"


def test_hub_path_converts_rows_like_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    records = [
        _conversation("c1", "u1", [4, 2], chosen={0: [1]}),
        _conversation("c2", "u2", [3, 2, 2]),
    ]
    calls = []

    def fake_load_dataset(path: str, name: str | None = None, **kwargs: Any) -> Any:
        calls.append((path, name))
        return datasets.DatasetDict({"train": datasets.Dataset.from_list(records)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub_prefs, skips, source = load_prism(None, progress=False)
    assert calls == [(HUB_ID, HUB_CONFIG)]
    assert source["hub"] == HUB_ID and source["rows"] == {"train": 2}
    assert skips.total == 0

    local_prefs, _, _ = load_prism(_write(tmp_path, records), progress=False)
    assert len(hub_prefs) == 3 + 1 + 2 + 1 + 1
    assert [p.to_json() for p in hub_prefs] == [p.to_json() for p in local_prefs]
