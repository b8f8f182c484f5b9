"""Onboarded users survive crashes: the journal, atomic vector files, replay, id checks."""

from __future__ import annotations

import asyncio

import pytest
import torch

import persalign.rewards as rewards
from persalign.decoding.policy import Policy
from persalign.serve.api_errors import ApiError
from persalign.serve.personal import Personalizer
from persalign.serve.schemas import DEFAULT_USER, CompletionRequest, ServeLimits, check_user_id
from persalign.serve.service import Service
from persalign.serve.users import UserStore
from persalign.types import Preference


def prefs(user: str, n: int, word: str = "cat") -> list[Preference]:
    return [
        Preference(f"{user}/{i}", user, f"Say about {word} {i}", f"{word} alpha", f"{word} omega")
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def rm(tiny_lm: str):
    model = rewards.create("mpu-avg", backbone=tiny_lm, device="cpu", seed=0, adapt_steps=5)
    model.set_users(
        ["u1", "u2"], torch.randn(2, model.user_dim, generator=torch.Generator().manual_seed(0))
    )
    return model


@pytest.mark.parametrize("bad", ["", "   ", "a\x00", "x" * 513])
def test_bad_user_ids_never_reach_a_path(tmp_path, bad: str):
    with pytest.raises(ValueError):
        check_user_id(bad)
    with pytest.raises(ValueError):
        UserStore(tmp_path).vector_path(bad)
    assert check_user_id("user-1.A_b") != DEFAULT_USER
    with pytest.raises(ValueError):
        check_user_id(DEFAULT_USER)  # the reserved default row cannot be named by a client


@pytest.mark.parametrize("user", ["../x", "a/b", ".hidden", "a b", "x" * 65, "é", "..", "7", "~x"])
def test_any_benchmark_user_id_is_encoded_inside_the_folder(tmp_path, user: str):
    store = UserStore(tmp_path)
    path = store.vector_path(check_user_id(user))
    assert path.parent == tmp_path / "users" and "/" not in path.name
    assert not path.name.startswith(".")
    assert path != store.vector_path("x")  # distinct ids, distinct files
    store.write_vector(user, 1, torch.ones(3))
    seq, vector = store.read_vector(user)
    assert seq == 1 and vector.tolist() == [1.0, 1.0, 1.0]
    assert store.vector_path("alice-01").name == "alice-01.safetensors"  # old files still found


def test_a_torn_journal_line_is_cut_and_never_counted(tmp_path):
    store = UserStore(tmp_path)
    store.append("alice", prefs("alice", 2))
    store.append("bob", prefs("bob", 1))
    with store.journal.open("ab") as handle:
        handle.write(b'{"seq": 3, "user": "alice", "time": 1.0, "preferences": [{"id"')
    (tmp_path / "users").mkdir(exist_ok=True)
    (tmp_path / "users" / ".alice.safetensors.x.tmp").write_bytes(b"half")
    records = UserStore(tmp_path).load()
    assert {u: (r.sets, len(r.preferences)) for u, r in records.items()} == {
        "alice": (1, 2),
        "bob": (1, 1),
    }
    assert store.journal.read_bytes().endswith(b"\n")
    assert not list((tmp_path / "users").glob(".*.tmp"))


def test_vectors_round_trip_with_their_sequence_number(tmp_path):
    store = UserStore(tmp_path)
    store.load()
    vector = torch.randn(7)
    store.write_vector("alice", 4, vector)
    seq, back = store.read_vector("alice")
    assert seq == 4 and torch.equal(back, vector)
    (tmp_path / "users" / "bob.safetensors").write_bytes(b"garbage")
    assert store.read_vector("bob") is None  # unreadable: adapted again from the journal


def test_adaptation_does_not_depend_on_who_was_onboarded_before(tiny_lm: str):
    """PReF starts a new user at the mean of the table: onboarded users must not enter it."""
    rm = rewards.create("pref", backbone=tiny_lm, device="cpu", seed=0, adapt_steps=5)
    rm.set_users(
        ["u1", "u2"], torch.randn(2, rm.user_dim, generator=torch.Generator().manual_seed(1))
    )
    people = Personalizer(rm)
    alone = people.adapt("carol", prefs("carol", 3))
    people.install("dave", people.adapt("dave", prefs("dave", 3, "dog")))
    again = people.adapt("carol", prefs("carol", 3))
    torch.testing.assert_close(alone, again, rtol=1e-5, atol=1e-6)
    assert "carol" not in rm.user_ids  # adapt leaves the served users as they were
    assert people.reward_user("nobody") == DEFAULT_USER and people.reward_user("u1") == "u1"


def test_a_crash_between_journal_and_vector_is_replayed(tmp_path, rm, tiny_lm_other: str):
    """The journal says alice has two sets; her vector file only knows the first: a restart
    adapts her again from both, as the live server would have."""
    store = UserStore(tmp_path)
    store.load()
    first, second = prefs("alice", 2), prefs("alice", 2, "sun")
    people = Personalizer(rm)
    seq, _ = store.append("alice", first)
    store.write_vector("alice", seq, people.adapt("alice", first))
    store.append("alice", second)  # killed before the vector was written
    expected = people.adapt("alice", first + second)
    policy = Policy.load(tiny_lm_other, device="cpu")
    icl = {"retrieval": "bm25", "shots": 2}
    service = Service(policy, rm, ServeLimits(), state_dir=tmp_path, icl_options=icl)
    service.start()
    try:
        info = service.user_info("alice")
        assert info["preference_sets"] == 2 and info["preferences"] == 4
        torch.testing.assert_close(torch.tensor(info["vector"]), expected, rtol=1e-4, atol=1e-5)
        assert store.read_vector("alice")[0] == 2
        # icl-rag puts the user's onboarded preferences into the prompt as demonstrations
        ask = {"model": "persalign", "prompt": "Say about cat 1", "user": "alice"}
        rag = service.spec(CompletionRequest(**ask, persalign={"decoder": "icl-rag"}))
        plain = service.spec(CompletionRequest(**ask, persalign={"decoder": "zero-shot"}))
        assert rag.reward_ids is None and len(rag.policy_ids) > len(plain.policy_ids)
        text = policy.tokenizer.decode(rag.policy_ids).replace(" ", "")  # char-level: "c a t"
        assert "catalpha" in text and "Sayaboutcat0" in text
    finally:
        service.stop()


def naive_adapt(rm, base_users, base_table, user, support):
    """The reference: adapt on the served model itself, then put its users back."""
    ids = sorted(rm.user_ids, key=rm.user_ids.__getitem__)
    table = rm.user_table.detach().clone()
    rm.set_users(base_users, base_table)
    try:
        rm.adapt(user, support)
        return rm.user_table[rm.user_ids[user]].detach().clone()
    finally:
        rm.set_users(ids, table)


@pytest.mark.parametrize("method", ["mpu-avg", "pref", "pal"])
def test_adapting_on_a_fork_equals_adapting_in_place_and_leaves_the_model(tiny_lm, method):
    model = rewards.create(method, backbone=tiny_lm, device="cpu", seed=0, adapt_steps=5)
    model.set_users(
        ["u1", "u2"], torch.randn(2, model.user_dim, generator=torch.Generator().manual_seed(0))
    )
    people = Personalizer(model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ids = dict(model.user_ids)
    forked = people.adapt("carol", prefs("carol", 3))
    assert dict(model.user_ids) == ids  # the served model never saw carol
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)
    expected = naive_adapt(model, people.base_users, people.base_table, "carol", prefs("carol", 3))
    torch.testing.assert_close(forked, expected, rtol=1e-5, atol=1e-6)


def service_on(tmp_path, rm, policy_spec, **limits):
    policy = Policy.load(policy_spec, device="cpu")
    icl = {"retrieval": "bm25", "shots": 2}
    service = Service(policy, rm, ServeLimits(**limits), state_dir=tmp_path, icl_options=icl)
    service.start()
    return service


def test_preferences_kept_per_user_are_capped(tmp_path, rm, tiny_lm_other):
    service = service_on(tmp_path, rm, tiny_lm_other, max_user_preferences=3)
    try:
        asyncio.run(service.onboard("erin", prefs("erin", 2)))
        info = asyncio.run(service.onboard("erin", prefs("erin", 2, "sun")))
        assert info["preferences"] == 3 and info["preference_sets"] == 2
        kept = service.support["erin"]
        assert [p.prompt for p in kept] == ["Say about cat 1", "Say about sun 0", "Say about sun 1"]
    finally:
        service.stop()


def test_an_adaptation_past_its_timeout_is_a_503_and_stores_nothing(tmp_path, rm, tiny_lm_other):
    service = service_on(tmp_path, rm, tiny_lm_other, adapt_timeout=1e-4)
    try:
        with pytest.raises(ApiError) as refused:
            asyncio.run(service.onboard("fred", prefs("fred", 3)))
        assert refused.value.status == 503 and "--adapt-timeout" in refused.value.message
        service.onboarder.worker.submit(lambda: None).result(60)  # the abandoned job is done
        assert service.user_info("fred")["status"] == "unknown"
        assert not UserStore(tmp_path).load()  # nothing journaled
        assert service.onboarder.pending == 0
    finally:
        service.stop()
