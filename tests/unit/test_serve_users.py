"""Onboarded users in the database store (SQLite and a real PostgreSQL): transactions that
survive kill -9, versions replicas sync by, deletes, idempotency keys, the journal import; and
the older journal folder's own crash rules (read once for the import)."""

from __future__ import annotations

import asyncio

import pytest
import torch

import persalign.rewards as rewards
from persalign.decoding.policy import Policy
from persalign.serve.api_errors import ApiError
from persalign.serve.journal import JournalFolder
from persalign.serve.personal import Personalizer
from persalign.serve.schemas import DEFAULT_USER, CompletionRequest, ServeLimits, check_user_id
from persalign.serve.service import Service
from persalign.serve.store import Conflict, Duplicate, UserStore
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
        JournalFolder(tmp_path).vector_path(bad)
    assert check_user_id("user-1.A_b") != DEFAULT_USER
    with pytest.raises(ValueError):
        check_user_id(DEFAULT_USER)  # the reserved default row cannot be named by a client


@pytest.mark.parametrize("user", ["../x", "a/b", ".hidden", "a b", "x" * 65, "é", "..", "7", "~x"])
def test_any_benchmark_user_id_is_encoded_inside_the_folder(tmp_path, user: str):
    store = JournalFolder(tmp_path)
    path = store.vector_path(check_user_id(user))
    assert path.parent == tmp_path / "users" and "/" not in path.name
    assert not path.name.startswith(".")
    assert path != store.vector_path("x")  # distinct ids, distinct files
    store.write_vector(user, 1, torch.ones(3))
    seq, vector = store.read_vector(user)
    assert seq == 1 and vector.tolist() == [1.0, 1.0, 1.0]
    assert store.vector_path("alice-01").name == "alice-01.safetensors"  # old files still found


def test_a_torn_journal_line_is_cut_and_never_counted(tmp_path):
    store = JournalFolder(tmp_path)
    store.append("alice", prefs("alice", 2))
    store.append("bob", prefs("bob", 1))
    with store.journal.open("ab") as handle:
        handle.write(b'{"seq": 3, "user": "alice", "time": 1.0, "preferences": [{"id"')
    (tmp_path / "users").mkdir(exist_ok=True)
    (tmp_path / "users" / ".alice.safetensors.x.tmp").write_bytes(b"half")
    records = JournalFolder(tmp_path).load()
    assert {u: (r.sets, len(r.preferences)) for u, r in records.items()} == {
        "alice": (1, 2),
        "bob": (1, 1),
    }
    assert store.journal.read_bytes().endswith(b"\n")
    assert not list((tmp_path / "users").glob(".*.tmp"))


def test_vectors_round_trip_with_their_sequence_number(tmp_path):
    store = JournalFolder(tmp_path)
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


def test_a_journal_is_imported_once_and_its_stale_vectors_adapted(tmp_path, rm, tiny_lm_other):
    """An older server's journal says alice has two sets; her vector file only knows the
    first (killed between the two writes): the import keeps both sets, the start adapts her
    from both and stores the vector; a second start imports nothing again."""
    store = JournalFolder(tmp_path)
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
        db = UserStore.open(None, folder=tmp_path)
        stored = db.fetch("alice")
        assert stored.sets == 2 and len(stored.preferences) == 4
        torch.testing.assert_close(stored.vector, expected, rtol=1e-4, atol=1e-5)
        assert db.import_journal(tmp_path) == 0  # recorded: never imported twice
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
        assert not UserStore.open(None, folder=tmp_path).load()  # nothing stored
        assert service.onboarder.pending == 0
    finally:
        service.stop()


def test_a_second_start_does_not_import_the_journal_again(tmp_path, rm, tiny_lm_other):
    journal = JournalFolder(tmp_path)
    journal.append("gina", prefs("gina", 2))
    for _ in range(2):
        service = service_on(tmp_path, rm, tiny_lm_other)
        service.stop()
    stored = UserStore.open(None, folder=tmp_path).load()
    assert stored["gina"].sets == 1 and len(stored["gina"].preferences) == 2


# ---------------------------------------------------------------------- the database store
def start_postgres(folder):
    """A real PostgreSQL server (pgserver) in ``folder``; as root, pgserver runs it as its own
    ``pgserver`` system user. Returns (server, a function giving a fresh database's URL)."""
    import pgserver
    import sqlalchemy as sa

    folder.chmod(0o755)
    server = pgserver.get_server(folder / "pg", cleanup_mode="delete")
    admin = sa.create_engine(
        server.get_uri().replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT",
    )
    count = [0]

    def fresh() -> str:
        count[0] += 1
        name = f"persalign_{count[0]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        return server.get_uri(database=name)

    return server, fresh


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    server, fresh = start_postgres(tmp_path_factory.mktemp("pg"))
    yield fresh
    server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'users.sqlite'}"
    return request.getfixturevalue("postgres")()


def test_a_set_and_its_vector_are_one_versioned_transaction(store_url):
    store = UserStore.open(store_url)
    assert store.version("alice") is None and store.load() == {}
    z1, z2 = torch.randn(5), torch.randn(5)
    v1 = store.add("alice", prefs("alice", 2), z1, key="k1")
    with pytest.raises(Conflict):  # a second "new user" write loses: another replica won
        store.add("alice", prefs("alice", 1), z2)
    with pytest.raises(Duplicate):
        store.add("alice", prefs("alice", 1), z2, key="k1", base=v1)
    v2 = store.add("alice", prefs("alice", 1, "sun"), z2, key="k2", base=v1)
    with pytest.raises(Conflict):  # adapted from v1, but v2 is stored: adapt again
        store.add("alice", prefs("alice", 1), z1, base=v1)
    assert v2 > v1 and store.version("alice") == v2
    got = store.fetch("alice")
    assert got.sets == 2 and torch.equal(got.vector, z2)
    assert [p.prompt for p in got.preferences] == [
        "Say about cat 0",
        "Say about cat 1",
        "Say about sun 0",
    ]
    assert [p.id for p in got.preferences] == ["alice/1/0", "alice/1/1", "alice/2/0"]
    assert store.has_key("alice", "k2") and not store.has_key("bob", "k2")
    odd = "a/../b é"  # any benchmark id is a plain column value
    store.add(odd, prefs(odd, 1), None)
    assert set(store.load()) == {"alice", odd} and store.fetch(odd).vector is None
    assert store.delete("alice") and not store.delete("alice")
    assert store.fetch("alice") is None and store.version("alice") is None
    v3 = store.add("alice", prefs("alice", 1), z1)
    assert v3 not in (v1, v2)  # a version is never handed out twice, even across a delete


WRITER = """
import sys, torch
from persalign.serve.store import UserStore
from persalign.types import Preference
store = UserStore.open(sys.argv[1])
base = {}
for i in range(10_000):
    user = f"w{i % 3}"
    ps = [Preference(f"{user}/{i}", user, f"p{i}", "a", "b")]
    z = torch.full((64,), float(i))
    base[user] = store.add(user, ps, z, key=f"k{i}", base=base.get(user))
    print(user, base[user], i, flush=True)  # acknowledged: committed before this line
"""


def test_kill_9_at_any_point_keeps_every_acknowledged_set_and_vector(store_url, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    store = UserStore.open(store_url)  # tables exist before the writer starts
    for delay in (0.6, 1.3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, store_url], stdout=subprocess.PIPE, text=True
        )
        acked = []
        deadline = time.monotonic() + delay + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(line.split())
            if len(acked) == 1:
                started = time.monotonic()
            if len(acked) > 1 and time.monotonic() - started > delay:
                os.kill(proc.pid, signal.SIGKILL)  # most likely inside a transaction
                break
        proc.wait(30)
        acked += [line.split() for line in proc.stdout.read().splitlines()]
        assert len(acked) > 3, "the writer acknowledged nothing"
        users = UserStore.open(store_url).load()
        for user, version, i in acked:
            assert store.has_key(user, f"k{i}"), (user, i)
            assert users[user].version >= int(version)
        for stored in users.values():  # each vector matches its own last set, never torn
            last = int(stored.preferences[-1].prompt[1:])
            assert torch.equal(stored.vector, torch.full((64,), float(last)))
        for user in list(users):
            store.delete(user)


def test_a_second_replica_serves_what_the_first_onboarded(store_url, rm, tiny_lm_other):
    """Two services share one store: B serves A's user as their own after a sync, and
    forgets them after A deletes them; an idempotency key counts a retried post once."""
    policy = Policy.load(tiny_lm_other, device="cpu")
    limits = ServeLimits(sync_interval=0.0)
    a = Service(policy, rm, limits, store=store_url, icl_options={"retrieval": "bm25"})
    b = Service(policy, copy_rm(rm), limits, store=store_url, icl_options={"retrieval": "bm25"})
    a.start()
    b.start()
    try:
        ask = CompletionRequest(model="persalign", prompt="Say about cat", user="hana")
        assert b.user_status("hana") == "default"
        first = asyncio.run(a.onboard("hana", prefs("hana", 2), key="once"))
        again = asyncio.run(a.onboard("hana", prefs("hana", 2), key="once"))
        assert again["preference_sets"] == first["preference_sets"] == 1
        spec = b.spec(ask)
        assert spec.reward_user == "hana" and b.user_status("hana") == "own"
        assert b.user_info("hana")["vector"] == first["vector"]
        asyncio.run(b.onboard("hana", prefs("hana", 1, "sun")))  # B writes on A's version
        assert a.user_info("hana")["preference_sets"] == 2
        assert a.delete("hana")["deleted"]
        b.spec(ask)
        assert b.user_status("hana") == "default" and "hana" not in b.rm.user_ids
        with pytest.raises(ApiError) as gone:
            b.delete("hana")
        assert gone.value.status == 404
    finally:
        a.stop()
        b.stop()


def copy_rm(model):
    """An independent reward model with the same weights and users (a second replica)."""
    import copy

    return copy.deepcopy(model)


def test_served_icl_rag_embeds_support_at_onboarding_and_only_the_query_per_request(
    tmp_path, rm, tiny_lm_other, monkeypatch
):
    """The embedder loads once; onboarding embeds the user's prompts; a request embeds its
    query alone and writes no file; the demonstrations are the decoder's own (reference:
    IclRagDecoder with the same embedder); a deleted user's vectors are gone."""
    import hashlib

    import numpy as np

    import persalign.decoding.icl_rag as icl_rag_module
    import persalign.serve.retrieval as retrieval
    from persalign.decoding.base import GenerationRequest
    from persalign.decoding.icl_rag import IclRagDecoder

    class HashEmbedder:
        def __init__(self):
            self.calls: list[list[str]] = []

        def encode(self, texts):
            self.calls.append(list(texts))
            out = np.zeros((len(texts), 32), dtype=np.float32)
            for i, text in enumerate(texts):
                for word in text.lower().split():
                    out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 32] += 1.0
            return out / np.linalg.norm(out, axis=1, keepdims=True)

    embedder, loads = HashEmbedder(), []
    monkeypatch.setattr(
        retrieval, "load_embedder", lambda spec, **kw: loads.append(spec) or embedder
    )
    policy = Policy.load(tiny_lm_other, device="cpu")
    icl = {"retrieval": "embedding", "shots": 2}
    service = Service(policy, rm, ServeLimits(), state_dir=tmp_path / "s", icl_options=icl)
    service.start()
    support = [
        Preference(f"p{i}", "ivy", prompt, "yes", "no")
        for i, prompt in enumerate(["red apple pie", "blue sky day", "green apple tart", "sea"])
    ]
    try:
        asyncio.run(service.onboard("ivy", support))
        assert len(loads) == 1 and embedder.calls == [sorted(p.prompt for p in support)]
        before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
        ask = CompletionRequest(
            model="persalign", prompt="apple cake", user="ivy", persalign={"decoder": "icl-rag"}
        )
        spec = service.spec(ask)
        assert embedder.calls[-1] == ["apple cake"] and len(loads) == 1
        assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before  # no cache file
        reference = IclRagDecoder(
            policy, settings=IclRagDecoder.settings_class(**icl), support=service.support
        )
        monkeypatch.setattr(icl_rag_module, "load_embedder", lambda spec, **kw: embedder)
        monkeypatch.setattr(icl_rag_module, "cached_encode", lambda e, texts, **kw: e.encode(texts))
        expected = reference.prepare([GenerationRequest("q", "ivy", "apple cake")])[0]
        assert spec.policy_ids == list(expected.prompt_ids)
        assert service.delete("ivy")["deleted"]
        assert "ivy" not in service.prompters["icl-rag"].by_user
    finally:
        service.stop()
