"""ACL Anthology metadata -> an author corpus (Pref-ACL, the stand-in for LaMP-5 here).

    corpus = load_acl("../shared/data/acl_anthology", include=["2024.*"])
    corpus.papers["2024.acl-long.1"].year
    # 2024
    corpus.authors["id:bill-byrne"][:2]          # Anthology IDs of the papers he wrote
    # ['2024.acl-long.289', '2024.acl-long.291']
    corpus = load_acl(None)   # $PERSALIGN_ACL_DIR, else download the Anthology into the cache

The source is a folder laid out like the Anthology repository's ``data/``: ``xml/*.xml`` (one
collection per file) and ``yaml/name_variants.yaml`` (the repository root, holding ``data/``, works
too). ``include`` takes glob patterns on XML file names or collection ids (``'2024.*'``, ``'P16'``).
Without a folder, the Anthology's GitHub tarball (``url``, else ``$PERSALIGN_ACL_URL``) is
downloaded once into ``$PERSALIGN_CACHE/acl_anthology`` (file lock, completion marker; delete the
folder to refresh it), keeping only ``data/xml/*.xml`` and ``data/yaml/name_variants.yaml``.

Papers: Anthology ID (``2024.acl-long.1``; old style ``P16-1001``, ``W19-3001``), title and
abstract with inline markup reduced to its text and whitespace collapsed, the volume's year.
Papers without a title or abstract, retracted or removed papers and volume frontmatter are
skipped and counted in ``corpus.skips``. Editors are not authors.

User keys (JSON-safe, no path separators; use ``sanitize_key`` for file names):

- ``id:<person id>`` for an ``<author id=...>``, or a name that ``name_variants.yaml`` maps to an
  entry with an ``id``;
- ``name:<first last>`` otherwise: NFKC, casefolded, whitespace collapsed, accents kept (the yaml
  lists accent-less spellings as variants). Variants map to their entry's canonical name. A name
  that the yaml gives to several people stays ``name:`` (counted in ``source["author_keys"]``).

A missing ``name_variants.yaml`` is not fatal: a warning is logged and recorded in
``source["warnings"]``, and names are used as written.
"""

from __future__ import annotations

import logging
import os
import re
import time
import unicodedata
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from fnmatch import fnmatchcase
from pathlib import Path
from xml.parsers import expat

import yaml

from persalign.data.corpus import Corpus, Paper
from persalign.data.download import ACL_URL_ENV, DEFAULT_ACL_URL, download_acl
from persalign.errors import DataError
from persalign.logs import progress_bar

log = logging.getLogger(__name__)

ACL_DIR_ENV = "PERSALIGN_ACL_DIR"
NAME_VARIANTS = Path("yaml") / "name_variants.yaml"
LAYOUT = "expected xml/*.xml and yaml/name_variants.yaml, as in the ACL Anthology's data/"
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # safe_load semantics, in C
_NAME_JUNK = re.compile(r"[\x00-\x1f\x7f/\\]")


def normalize_name(first: str | None, last: str | None) -> str:
    """``"first last"``: NFKC, casefolded, whitespace collapsed, accents kept, no slashes."""
    text = unicodedata.normalize("NFKC", f"{first or ''} {last or ''}").casefold()
    return " ".join(_NAME_JUNK.sub(" ", text).split())


def inline_text(element: ET.Element | None) -> str:
    """An element's text with inline markup (fixed-case, tex-math, i, b, url) reduced to text."""
    return "" if element is None else " ".join("".join(element.itertext()).split())


def anthology_id(collection: str, volume: str, paper: str) -> str:
    """``2024.acl-long.1`` (new style), ``P16-1001`` or ``W19-3001`` (old style)."""
    if "." in collection:
        return f"{collection}-{volume}.{paper}"
    if (
        collection.startswith("W")
        or collection == "C69"
        or (collection == "D19" and int(volume) >= 5)
    ):
        return f"{collection}-{int(volume):02d}{int(paper):02d}"
    return f"{collection}-{int(volume)}{int(paper):03d}"


class NameIndex:
    """Normalized author name -> user key, from ``name_variants.yaml`` (empty without it)."""

    def __init__(self, keys: dict[str, str], ambiguous: set[str], entries: int = 0):
        self.keys = keys
        self.ambiguous = ambiguous
        self.entries = entries

    @classmethod
    def load(cls, path: Path) -> NameIndex:
        try:
            with path.open("rb") as handle:
                entries = yaml.load(handle, Loader=_SAFE_LOADER)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or exc
            raise DataError(f"malformed YAML ({problem})", path, mark and mark.line + 1) from None
        if not isinstance(entries, list):
            raise DataError("expected a list of name entries", path)
        targets: dict[str, set[str]] = {}
        for number, entry in enumerate(entries, start=1):
            canonical = entry.get("canonical") if isinstance(entry, dict) else None
            variants = entry.get("variants") or [] if isinstance(entry, dict) else []
            names = [canonical, *variants] if isinstance(variants, list) else [None]
            if not all(isinstance(name, dict) for name in names):
                raise DataError(f"entry {number}: names must be {{first, last}} mappings", path)
            normalized = [normalize_name(name.get("first"), name.get("last")) for name in names]
            if not normalized[0]:
                raise DataError(f"entry {number} has an empty canonical name", path)
            person = entry.get("id")
            key = f"id:{person}" if person else f"name:{normalized[0]}"
            for name in filter(None, normalized):
                targets.setdefault(name, set()).add(key)
        keys = {name: next(iter(found)) for name, found in targets.items() if len(found) == 1}
        ambiguous = {name for name, found in targets.items() if len(found) > 1}
        return cls(keys, ambiguous, len(entries))

    def key_for(self, author: ET.Element, counts: Counter[str]) -> str | None:
        """The user key of an ``<author>`` element (None when it has no name and no id)."""
        person = (author.get("id") or "").strip()
        if person:
            counts["id_attribute"] += 1
            return f"id:{person}"
        name = normalize_name(author.findtext("first"), author.findtext("last"))
        if not name:
            return None
        if name in self.ambiguous:
            counts["ambiguous_name"] += 1
            return f"name:{name}"
        if name in self.keys:
            counts["name_variants"] += 1
            return self.keys[name]
        counts["name"] += 1
        return f"name:{name}"


def _line_of(path: Path, root: ET.Element, element: ET.Element) -> int | None:
    """The line of ``element`` (ElementTree keeps none): an expat rescan, on errors only."""
    ordinal = next(i for i, el in enumerate(root.iter(element.tag)) if el is element)
    parser = expat.ParserCreate()
    seen = 0

    class Found(Exception):
        pass

    def start(name: str, _attrs: dict[str, str]) -> None:
        nonlocal seen
        if name == element.tag:
            if seen == ordinal:
                raise Found(parser.CurrentLineNumber)
            seen += 1

    parser.StartElementHandler = start
    try:
        with path.open("rb") as handle:
            parser.ParseFile(handle)
    except Found as found:
        return int(found.args[0])
    except expat.ExpatError:
        return None
    return None


def _read_collection(path: Path, names: NameIndex, corpus: Corpus, counts: Counter[str]) -> None:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, column = exc.position
        message = re.sub(r": line \d+, column \d+$", "", str(exc))
        raise DataError(f"malformed XML ({message}, column {column})", path, line) from None
    collection = root.get("id")
    if root.tag != "collection" or not collection:
        raise DataError(
            "expected a <collection id=...> root element", path, _line_of(path, root, root)
        )
    skips = corpus.skips
    for volume in root.findall("volume"):
        volume_id = volume.get("id")
        year_text = (volume.findtext("meta/year") or "").strip()
        if not volume_id or not year_text.isdigit():
            problem = "has no id" if not volume_id else f"has no valid <meta><year> ({year_text!r})"
            raise DataError(f"<volume> {problem}", path, _line_of(path, root, volume))
        try:
            frontmatter_id = anthology_id(collection, volume_id, "0")
        except ValueError:
            bad = f"<volume> id {volume_id!r} is not a number (old-style collection)"
            raise DataError(bad, path, _line_of(path, root, volume)) from None
        if volume.find("frontmatter") is not None:
            skips.add("volume frontmatter (no abstract)", frontmatter_id)
        for paper in volume.findall("paper"):
            counts["papers_read"] += 1
            number = paper.get("id") or ""
            if not number.isdigit():
                bad = f"<paper> without a numeric id (volume {volume_id!r}, id {number!r})"
                raise DataError(bad, path, _line_of(path, root, paper))
            paper_id = anthology_id(collection, volume_id, number)
            title = inline_text(paper.find("title"))
            abstract = inline_text(paper.find("abstract"))
            if paper.find("retracted") is not None or paper.find("removed") is not None:
                skips.add("retracted or removed paper", paper_id)
            elif not title:
                skips.add("paper without title", paper_id)
            elif not abstract:
                skips.add("paper without abstract", paper_id)
            elif paper_id in corpus.papers:
                skips.add("duplicate Anthology ID", paper_id)
            else:
                authors = []
                for author in paper.findall("author"):
                    key = names.key_for(author, counts)
                    if key is None:
                        skips.add("author without a name", paper_id)
                    else:
                        authors.append(key)
                counts["papers_without_authors"] += not authors
                corpus.add_paper(Paper(paper_id, title, abstract, int(year_text)), authors)


def _data_folder(root: Path) -> Path:
    if not root.is_dir():
        raise DataError(f"no such folder ({LAYOUT})", root)
    for candidate in (root, root / "data"):
        if (candidate / "xml").is_dir():
            return candidate
    raise DataError(f"not an ACL Anthology data folder: no xml/ subfolder ({LAYOUT})", root)


def _select_files(xml_dir: Path, include: Sequence[str]) -> list[Path]:
    files = sorted(xml_dir.glob("*.xml"))
    if not files:
        raise DataError(f"no *.xml files ({LAYOUT})", xml_dir)
    if include:
        files = [
            f
            for f in files
            if any(fnmatchcase(f.name, p) or fnmatchcase(f.stem, p) for p in include)
        ]
        if not files:
            raise DataError(f"no XML file matches include patterns {list(include)}", xml_dir)
    return files


def load_acl(
    source: str | Path | None = None,
    *,
    include: Sequence[str] = (),
    progress: bool = True,
    url: str | None = None,
) -> Corpus:
    """Read an Anthology ``data/`` folder (or a URL / the cache when ``source`` is None)."""
    include = (include,) if isinstance(include, str) else tuple(include)
    if source is None and url is None:
        source = os.environ.get(ACL_DIR_ENV) or None
    downloaded_from = None
    if source is None or re.match(r"^(https?|file)://", str(source)):
        downloaded_from = str(source or url or os.environ.get(ACL_URL_ENV) or DEFAULT_ACL_URL)
        source = download_acl(downloaded_from, progress=progress)
    data = _data_folder(Path(source))
    files = _select_files(data / "xml", include)
    variants_path = data / NAME_VARIANTS
    warnings = []
    if variants_path.is_file():
        names = NameIndex.load(variants_path)
    else:
        warnings.append(f"{variants_path} not found: name variants are not merged")
        log.warning("%s", warnings[-1])
        names = NameIndex({}, set())
    corpus = Corpus(source={})
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    bar = progress_bar(transient=True) if progress else None
    with bar or nullcontext():
        task = bar.add_task("reading ACL Anthology XML", total=len(files)) if bar else None
        for path in files:
            _read_collection(path, names, corpus, counts)
            if bar is not None and task is not None:
                bar.advance(task)
    years = [p.year for p in corpus.papers.values() if p.year is not None]
    corpus.source = {
        "kind": "acl",
        "path": str(data),
        "url": downloaded_from,
        "include": list(include),
        "xml_files": len(files),
        "name_variants": str(variants_path) if variants_path.is_file() else None,
        "name_variant_entries": names.entries,
        "ambiguous_names": len(names.ambiguous),
        "papers_read": counts.pop("papers_read", 0),
        "papers_without_authors": counts.pop("papers_without_authors", 0),
        "author_keys": dict(sorted(counts.items())),
        "years": [min(years), max(years)] if years else None,
        "warnings": warnings,
    }
    log.info(
        "read %d ACL Anthology files in %.1fs: %d papers with abstracts, %d authors",
        len(files),
        time.perf_counter() - started,
        len(corpus.papers),
        len(corpus.authors),
    )
    return corpus
