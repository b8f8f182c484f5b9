"""The Pref-LaMP recipe on a synthetic corpus, with a deterministic stand-in embedder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from persalign.data import builder
from persalign.data.benchmark_folder import load_benchmark
from persalign.data.builder import _norm_title, build_pref_benchmark, mine_negatives
from persalign.data.corpus import Corpus, Paper
from persalign.data.registry import BuildOptions
from persalign.errors import ConfigError

TOPICS = ["parsing", "translation", "speech", "summarization"]


class HashEmbedder:
    """Bag of words hashed into 64 dims, L2-normalised: similar abstracts are close."""

    name = "hash-64"
    dim = 64
    max_seq_length = 256

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def fake_embedder(monkeypatch: pytest.MonkeyPatch) -> HashEmbedder:
    import persalign.data.builder as module

    emb = HashEmbedder()
    monkeypatch.setattr(module, "load_embedder", lambda spec, **kw: emb)
    monkeypatch.setattr(
        module, "cached_encode", lambda e, texts, batch_size=64, progress=False: e.encode(texts)
    )
    return emb


def synthetic_corpus(n_users: int = 8, per_user: int = 6) -> Corpus:
    corpus = Corpus(source={"kind": "synthetic"})
    for u in range(n_users):
        for i in range(per_user):
            topic = TOPICS[(u + i) % len(TOPICS)]
            pid = f"P{u:02d}-{i:02d}"
            coauthor = f"user{(u + 1) % n_users}" if i == 0 else None  # some shared papers
            corpus.add_paper(
                Paper(
                    pid, f"{topic.title()} study {u}-{i}", f"we study {topic} " * 3 + pid, 2016 + i
                ),
                [f"user{u}"] + ([coauthor] if coauthor else []),
            )
    # A paper whose title equals another's must never be its negative.
    corpus.add_paper(Paper("DUP", "Parsing Study 0-0", "we study parsing " * 3, 2020), ["solo"])
    return corpus


def options(**kw) -> BuildOptions:
    base = dict(min_items=3, train_users=5, adapt_users=2, negatives_top_k=3, seed=0)
    return BuildOptions(**{**base, **kw})


def test_negatives_are_admissible_and_completions_match(tmp_path: Path, fake_embedder):
    corpus = synthetic_corpus()
    manifest = build_pref_benchmark("toy", corpus, options(), tmp_path)
    bench = load_benchmark(tmp_path)
    writers = corpus.writers()
    prefs = [*bench.train, *bench.support, *bench.query]
    assert prefs, "the build produced no preferences"
    for pref in prefs:
        neg = pref.meta["negative_paper_id"]
        assert neg != pref.meta["paper_id"]
        assert pref.user not in writers[neg], "negative written by the user"
        assert _norm_title(pref.rejected) != _norm_title(pref.chosen)
        assert pref.chosen == corpus.papers[pref.meta["paper_id"]].title
        assert pref.prompt.endswith(corpus.papers[pref.meta["paper_id"]].abstract)
        assert 0 <= pref.meta["negative_rank"] < 3
    train_users = {p.user for p in bench.train}
    adapt_users = {p.user for p in [*bench.support, *bench.query]}
    assert len(train_users) == 5 and len(adapt_users) == 2 and not train_users & adapt_users
    assert not {p.id for p in bench.support} & {p.id for p in bench.query}
    assert [c.id for c in bench.completions] == [q.id for q in bench.query]
    assert all(c.reference == q.chosen for c, q in zip(bench.completions, bench.query, strict=True))
    assert manifest["skipped"]["user with fewer than 3 papers"]["examples"] == ["solo"]
    assert manifest["source"]["embedder"] == "hash-64"
    # default pool: the selected users' papers only ("solo" was not selected, so never a negative)
    assert all(p.meta["negative_paper_id"] != "DUP" for p in prefs)
    selected = manifest["train_user_ids"] + manifest["adapt_user_ids"]
    pool = {pid for user in selected for pid in corpus.authors[user]}
    assert manifest["source"]["negative_pool_papers"] == len(pool) < len(corpus.papers)
    assert all(p.meta["negative_paper_id"] in pool for p in prefs)


def test_negative_pool_all_draws_from_the_whole_corpus(tmp_path: Path, fake_embedder):
    manifest = build_pref_benchmark(
        "toy", synthetic_corpus(), options(negative_pool="all"), tmp_path
    )
    assert manifest["source"]["negative_pool_papers"] == 49
    with pytest.raises(ConfigError, match="negative_pool"):
        build_pref_benchmark("toy", synthetic_corpus(), options(negative_pool="x"), tmp_path)


def test_same_inputs_and_seed_give_byte_identical_files(tmp_path: Path, fake_embedder):
    build_pref_benchmark("toy", synthetic_corpus(), options(), tmp_path / "a")
    build_pref_benchmark("toy", synthetic_corpus(), options(), tmp_path / "b")
    build_pref_benchmark("toy", synthetic_corpus(), options(seed=1), tmp_path / "c")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(
        ["manifest.json", "train.jsonl", "support.jsonl", "query.jsonl", "completions.jsonl"]
    )
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (
        tmp_path / "c" / "train.jsonl"
    ).read_bytes()


def test_max_items_keeps_most_recent_and_counts(tmp_path: Path, fake_embedder):
    manifest = build_pref_benchmark("toy", synthetic_corpus(), options(max_items=4), tmp_path)
    bench = load_benchmark(tmp_path)
    for user in bench.users():
        prefs = [*user.train, *user.support, *user.query]
        assert len(prefs) <= 4
        assert min(p.meta["year"] for p in prefs) >= 2018  # the two oldest (2016, 2017) dropped
    assert manifest["skipped"]["papers beyond --max-items 4"]["count"] > 0


def naive_negatives(user, paper, pool, emb, writers, top_k):
    """Reference: score every pool paper, sort, filter, take the first top_k."""
    q = emb[[p.id for p in pool].index(paper.id)]
    order = sorted(range(len(pool)), key=lambda i: -float(emb[i] @ q))
    keep = [
        pool[i].id
        for i in order
        if pool[i].id != paper.id
        and user not in writers.get(pool[i].id, set())
        and _norm_title(pool[i].title) != _norm_title(paper.title)
    ]
    return keep[:top_k]


@pytest.mark.parametrize("margin", [0, 64])
def test_mine_negatives_equals_naive_reference(monkeypatch: pytest.MonkeyPatch, margin: int):
    monkeypatch.setattr(builder, "SEARCH_MARGIN", margin)  # 0 forces the full-scan fallback
    corpus = synthetic_corpus()
    pool = sorted(corpus.papers.values(), key=lambda p: p.id)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(pool), 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    writers = corpus.writers()
    queries = [(u, corpus.papers[pid]) for u, ids in corpus.authors.items() for pid in ids]
    got = mine_negatives(queries, pool, emb, writers, top_k=4, chunk=7)
    for user, paper in queries:
        expect = naive_negatives(user, paper, pool, emb, writers, 4)
        assert [n.paper.id for n in got[(user, paper.id)]] == expect


def test_too_few_users_is_a_clear_error(tmp_path: Path, fake_embedder):
    with pytest.raises(ConfigError, match="no user has 50 or more papers"):
        build_pref_benchmark("toy", synthetic_corpus(), options(min_items=50), tmp_path)
    with pytest.raises(ConfigError, match="negatives_top_k"):
        build_pref_benchmark("toy", synthetic_corpus(), options(negatives_top_k=0), tmp_path)
