"""The Pref-LaMP recipe (paper, section 5): author corpora -> preferences with hard negatives.

    from persalign.data.acl import load_acl
    corpus = load_acl("../shared/data/acl_anthology")
    manifest = build_pref_benchmark("pref-acl", corpus, BuildOptions(seed=0), "out/pref-acl")

For every paper of every selected user: the prompt is a title-generation instruction with the
abstract, ``chosen`` is the author's own title, and ``rejected`` is the title of a paper sampled
(seeded) from the ``negatives_top_k`` most similar abstracts (embedding cosine) among papers the
user did not write, never the same paper and never an identical title. Query items also become
ground-truth completions: the user's own title for that prompt.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persalign.data.acl import load_acl
from persalign.data.corpus import Corpus, Paper
from persalign.data.lamp5 import LAMP5_INSTRUCTION, load_lamp5
from persalign.data.registry import BUILDERS, BuildOptions, with_defaults
from persalign.data.splits import split_users, write_preference_benchmark
from persalign.errors import ConfigError
from persalign.io import SkipReport
from persalign.models import cached_encode, load_embedder
from persalign.seeding import seeded_rng
from persalign.types import Completion, Preference

log = logging.getLogger(__name__)

PAPER_SHAPE = (485, 126)  # Pref-LaMP: train users, adaptation users (section 6)
SEARCH_MARGIN = 64  # extra neighbours fetched so that exclusions rarely force a full scan


def title_prompt(abstract: str) -> str:
    """The LaMP-5 instruction, verbatim, with the abstract."""
    return LAMP5_INSTRUCTION + abstract


def _norm_title(title: str) -> str:
    return re.sub(r"\W+", " ", title.casefold()).strip()


@dataclass(frozen=True)
class Negative:
    paper: Paper
    similarity: float
    rank: int  # position among the admissible neighbours (0 = most similar)


def select_users(
    corpus: Corpus, options: BuildOptions, skips: SkipReport
) -> tuple[list[str], list[str]]:
    """Users with at least ``min_items`` papers, split into (train, adapt)."""
    eligible = []
    for user in sorted(corpus.authors):
        if len(corpus.authors[user]) >= options.min_items:
            eligible.append(user)
        else:
            skips.add(f"user with fewer than {options.min_items} papers", user)
    if not eligible:
        raise ConfigError(f"no user has {options.min_items} or more papers; lower --min-items")
    return split_users(
        eligible,
        train_users=options.train_users,
        adapt_users=options.adapt_users,
        seed=options.seed,
        paper_shape=PAPER_SHAPE,
    )


def user_papers(corpus: Corpus, user: str, options: BuildOptions, skips: SkipReport) -> list[Paper]:
    """The user's papers, capped at ``max_items`` (most recent kept; seeded sample if undated)."""
    papers = sorted((corpus.papers[pid] for pid in corpus.authors[user]), key=_paper_order)
    cap = options.max_items
    if cap is None or len(papers) <= cap:
        return papers
    if all(p.year is not None for p in papers):
        kept = papers[-cap:]
    else:
        kept = sorted(seeded_rng("cap", options.seed, user).sample(papers, cap), key=_paper_order)
    skips.add(f"papers beyond --max-items {cap}", user, count=len(papers) - cap)
    return kept


def _paper_order(paper: Paper) -> tuple[int, str]:
    return (paper.year if paper.year is not None else -1, paper.id)


def negative_pool(corpus: Corpus, items: dict[str, list[Paper]], which: str) -> list[Paper]:
    """Candidate negatives, sorted by id: the selected users' papers, or the whole corpus."""
    if which == "all":
        papers = corpus.papers.values()
    elif which == "users":
        ids = {pid for user in items for pid in corpus.authors[user]}
        papers = [corpus.papers[pid] for pid in ids]
    else:
        raise ConfigError(f"--negative-pool must be 'users' or 'all', got {which!r}")
    return sorted(papers, key=lambda p: p.id)


def mine_negatives(
    queries: list[tuple[str, Paper]],
    pool: list[Paper],
    pool_emb: np.ndarray,
    writers: dict[str, set[str]],
    top_k: int,
    *,
    chunk: int = 512,
) -> dict[tuple[str, str], list[Negative]]:
    """For each (user, paper): the ``top_k`` most similar admissible pool papers.

    Admissible: not written by the user, not the paper itself, not an identical title.
    ``pool_emb`` is [N, d] with unit rows, so the dot product is the cosine.
    """
    index = {p.id: i for i, p in enumerate(pool)}
    emb = torch.from_numpy(pool_emb)  # [N, d]
    norm_titles = [_norm_title(p.title) for p in pool]
    fetch = min(len(pool), top_k + SEARCH_MARGIN)
    out: dict[tuple[str, str], list[Negative]] = {}
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk]
        rows = torch.tensor([index[paper.id] for _, paper in block])
        sims = emb[rows] @ emb.T  # [b, N]
        top_sims, top_idx = sims.topk(fetch, dim=1)  # [b, fetch], sorted descending
        for j, (user, paper) in enumerate(block):
            picked = _admissible(
                user,
                paper,
                top_idx[j].tolist(),
                top_sims[j].tolist(),
                pool,
                norm_titles,
                writers,
                top_k,
            )
            if len(picked) < top_k and fetch < len(pool):  # exclusions ate the margin: full scan
                full_sims, full_idx = sims[j].sort(descending=True)
                picked = _admissible(
                    user,
                    paper,
                    full_idx.tolist(),
                    full_sims.tolist(),
                    pool,
                    norm_titles,
                    writers,
                    top_k,
                )
            out[(user, paper.id)] = picked
    return out


def _admissible(
    user: str,
    paper: Paper,
    idx: list[int],
    sims: list[float],
    pool: list[Paper],
    norm_titles: list[str],
    writers: dict[str, set[str]],
    top_k: int,
) -> list[Negative]:
    own_title = _norm_title(paper.title)
    picked: list[Negative] = []
    for i, sim in zip(idx, sims, strict=True):
        cand = pool[i]
        if cand.id == paper.id or user in writers.get(cand.id, ()) or norm_titles[i] == own_title:
            continue
        picked.append(Negative(cand, sim, len(picked)))
        if len(picked) == top_k:
            break
    return picked


def build_pref_benchmark(
    name: str, corpus: Corpus, options: BuildOptions, out: str | Path
) -> dict[str, Any]:
    """Run the recipe on ``corpus`` and write the benchmark folder; returns the manifest."""
    options = with_defaults(options, min_items=10)
    skips = SkipReport()
    skips.merge(corpus.skips)
    train, adapt = select_users(corpus, options, skips)
    items = {user: user_papers(corpus, user, options, skips) for user in [*train, *adapt]}

    pool = negative_pool(corpus, items, options.negative_pool)
    log.info("embedding %d abstracts with %s", len(pool), options.embedder)
    embedder = load_embedder(options.embedder)
    embedder.max_seq_length = options.embed_max_tokens
    pool_emb = cached_encode(
        embedder, [p.abstract for p in pool], batch_size=options.batch_size, progress=True
    )
    queries = [(user, paper) for user in [*train, *adapt] for paper in items[user]]
    log.info("mining hard negatives for %d (user, paper) items", len(queries))
    negatives = mine_negatives(queries, pool, pool_emb, corpus.writers(), options.negatives_top_k)

    prefs: list[Preference] = []
    completions: list[Completion] = []
    for user, paper in queries:
        candidates = negatives[(user, paper.id)]
        if not candidates:
            skips.add("paper with no admissible negative", f"{user}/{paper.id}")
            continue
        neg = seeded_rng("negative", options.seed, user, paper.id).choice(candidates)
        pref = Preference(
            id=f"{user}/{paper.id}",
            user=user,
            prompt=title_prompt(paper.abstract),
            chosen=paper.title,
            rejected=neg.paper.title,
            meta={
                "paper_id": paper.id,
                "year": paper.year,
                "negative_paper_id": neg.paper.id,
                "negative_similarity": round(neg.similarity, 6),
                "negative_rank": neg.rank,
            },
        )
        prefs.append(pref)
        completions.append(
            Completion(id=pref.id, user=user, prompt=pref.prompt, reference=paper.title)
        )
    return write_preference_benchmark(
        name,
        prefs,
        skips,
        options,
        out,
        source={
            **corpus.source,
            "papers": len(corpus.papers),
            "authors": len(corpus.authors),
            "embedder": embedder.name,
            "embed_max_tokens": options.embed_max_tokens,
            "negative_pool_papers": len(pool),
        },
        user_split=(train, adapt),
        completions=completions,
    )


@BUILDERS.register("pref-acl", summary="Pref-LaMP recipe on ACL Anthology authors (title gen.)")
def build_pref_acl(options: BuildOptions, out: str | Path) -> dict[str, Any]:
    """Pref-ACL: ACL Anthology abstracts and titles, per author, with mined hard negatives."""
    options = with_defaults(options, min_items=10)
    corpus = load_acl(options.source, include=options.include)
    return build_pref_benchmark("pref-acl", corpus, options, out)


@BUILDERS.register("pref-lamp", summary="Pref-LaMP: LaMP-5 titles with mined hard negatives")
def build_pref_lamp(options: BuildOptions, out: str | Path) -> dict[str, Any]:
    """Pref-LaMP: LaMP-5 profiles (abstract -> the user's own title), mined hard negatives."""
    options = with_defaults(options, min_items=10)
    corpus = load_lamp5(options.source)
    return build_pref_benchmark("pref-lamp", corpus, options, out)
