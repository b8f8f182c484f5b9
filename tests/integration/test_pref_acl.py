"""Pref-ACL from real ACL Anthology XML with the real bundled MiniLM embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persalign.data import BUILDERS, BuildOptions, load_benchmark
from persalign.data.acl import load_acl
from persalign.data.builder import _norm_title

pytestmark = pytest.mark.integration
INCLUDE = ("2024.eacl.xml", "2022.naacl.xml")


@pytest.fixture(scope="module")
def built(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("pref-acl")
    options = BuildOptions(
        source=str(shared_data / "acl_anthology"),
        include=INCLUDE,
        min_items=3,
        train_users=12,
        adapt_users=6,
        negatives_top_k=5,
        seed=0,
    )
    build = BUILDERS.get("pref-acl")
    manifest = build(options, out / "a")
    again = build(options, out / "b")  # warm embedding cache
    corpus = load_acl(shared_data / "acl_anthology", include=INCLUDE, progress=False)
    return out, manifest, again, corpus, options


def test_negatives_are_real_other_authors_papers(built):
    out, manifest, _, corpus, _ = built
    bench = load_benchmark(out / "a")
    writers = corpus.writers()
    prefs = [*bench.train, *bench.support, *bench.query]
    assert len({p.user for p in bench.train}) == 12
    assert len({p.user for p in bench.query}) == 6
    for pref in prefs:
        paper = corpus.papers[pref.meta["paper_id"]]
        negative = corpus.papers[pref.meta["negative_paper_id"]]
        assert pref.chosen == paper.title and pref.rejected == negative.title
        assert negative.id != paper.id and pref.user not in writers[negative.id]
        assert _norm_title(negative.title) != _norm_title(paper.title)
        assert pref.user in writers[paper.id]
        assert pref.prompt.startswith("Generate a title for the following abstract of a paper: ")
    # hard negatives: the mined abstracts are far more similar than random pairs
    sims = [p.meta["negative_similarity"] for p in prefs]
    assert sum(sims) / len(sims) > 0.5
    assert manifest["source"]["embedder"] == "bundled:all-minilm-l6-v2"
    assert manifest["skipped"]["volume frontmatter (no abstract)"]["count"] > 0


def test_rebuild_is_byte_identical_with_a_warm_cache(built):
    out, manifest, again, _, _ = built
    for name in (
        "train.jsonl",
        "support.jsonl",
        "query.jsonl",
        "completions.jsonl",
        "manifest.json",
    ):
        assert (out / "a" / name).read_bytes() == (out / "b" / name).read_bytes(), name
    assert manifest["files"] == again["files"]


def test_time_split_puts_recent_papers_in_query(built, tmp_path: Path):
    _, _, _, _, options = built

    BUILDERS.get("pref-acl")(options.model_copy(update={"split": "time"}), tmp_path / "t")
    bench = load_benchmark(tmp_path / "t")
    for user in bench.adapt_users():
        newest_support = max(p.meta["year"] for p in user.support)
        oldest_query = min(p.meta["year"] for p in user.query)
        assert newest_support <= oldest_query
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["options"]["split"] == "time"


def test_manifest_gives_items_per_user_beside_the_papers(built):
    out, manifest, _, _, _ = built
    bench = load_benchmark(out / "a")
    adapt = len(bench.support) + len(bench.query)
    got = manifest["items_per_user"]
    assert got["train"] == round(len(bench.train) / 12, 3)
    assert got["adapt"] == round(adapt / 6, 3)
    assert got["paper"] == {"train": 48.8, "adapt": 49.2, "benchmark": "pref-lamp"}
    assert manifest["source"]["embed_max_tokens"] == 512  # the default: whole abstracts
