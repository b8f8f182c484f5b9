"""Author corpora: the input of the Pref-LaMP recipe (LaMP-5 profiles, ACL Anthology authors).

    corpus = Corpus(source={"kind": "acl", "path": "..."})
    corpus.add_paper(Paper(id="P16-1001", title="A title", abstract="We ...", year=2016),
                     authors=["jane-doe", "john-roe"])
    corpus.authors["jane-doe"]
    # ['P16-1001']

A paper appears once in ``papers`` however many authors it has; ``authors`` maps each user to
the ids of the papers they wrote. Loaders skip (and count in ``skips``) papers without a title or
abstract, so every paper here has both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from persalign.io import SkipReport


@dataclass(frozen=True)
class Paper:
    """One paper: the unit of the Pref-LaMP recipe (prompt = abstract, completion = title)."""

    id: str
    title: str
    abstract: str
    year: int | None = None


@dataclass
class Corpus:
    """Papers and who wrote them, plus what the loader skipped and where it came from."""

    source: dict[str, Any]
    papers: dict[str, Paper] = field(default_factory=dict)
    authors: dict[str, list[str]] = field(default_factory=dict)
    skips: SkipReport = field(default_factory=SkipReport)

    def add_paper(self, paper: Paper, authors: Iterable[str]) -> None:
        """Add ``paper`` (once) and credit it to each author (once each)."""
        self.papers.setdefault(paper.id, paper)
        for author in dict.fromkeys(authors):
            ids = self.authors.setdefault(author, [])
            if paper.id not in ids:
                ids.append(paper.id)

    def writers(self) -> dict[str, set[str]]:
        """paper id -> the set of users who wrote it (for excluding a user's own papers)."""
        out: dict[str, set[str]] = {}
        for author, ids in self.authors.items():
            for pid in ids:
                out.setdefault(pid, set()).add(author)
        return out
