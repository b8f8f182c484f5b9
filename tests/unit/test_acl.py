"""ACL Anthology loader: real collection files from the shared data, and small XML fixtures."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from persalign.data.acl import anthology_id, load_acl, normalize_name
from persalign.errors import DataError


def _collection(cid: str, volumes: str) -> str:
    head = "<?xml version='1.0' encoding='UTF-8'?>\n"
    return f'{head}<collection id="{cid}">\n{volumes}</collection>\n'


def _volume(vid: str, year: str, papers: str, editors: str = "") -> str:
    return (
        f'  <volume id="{vid}" type="proceedings">\n'
        f"    <meta><booktitle>B</booktitle>{editors}<year>{year}</year><venue>v</venue></meta>\n"
        f"    <frontmatter><bibkey>front</bibkey></frontmatter>\n{papers}  </volume>\n"
    )


def _paper(pid: str, title: str, abstract: str | None, authors: str) -> str:
    abstract_xml = "" if abstract is None else f"<abstract>{abstract}</abstract>"
    return f'    <paper id="{pid}"><title>{title}</title>{authors}{abstract_xml}</paper>\n'


def _author(first: str, last: str, person_id: str | None = None) -> str:
    attr = f' id="{person_id}"' if person_id else ""
    return f"<author{attr}><first>{first}</first><last>{last}</last></author>"


NAME_VARIANTS = """\
- canonical: {first: Steven, last: Abney}
  id: steven-abney
  variants:
  - {first: Steve, last: Abney}
- canonical: {first: Cláudia, last: Freitas}
  variants:
  - {first: Claudia, last: Freitas}
- canonical: {first: Wei, last: Ai}
  id: wei-ai
- canonical: {first: Wei, last: Ai}
  id: wei-ai-umich
"""


def _anthology(tmp_path: Path, files: dict[str, str], variants: str | None = NAME_VARIANTS) -> Path:
    root = tmp_path / "anthology"
    (root / "xml").mkdir(parents=True)
    for name, text in files.items():
        (root / "xml" / name).write_text(text, encoding="utf-8")
    (root / "xml" / "schema.rnc").write_text("start = collection\n", encoding="utf-8")
    if variants is not None:
        (root / "yaml").mkdir()
        (root / "yaml" / "name_variants.yaml").write_text(variants, encoding="utf-8")
    return root


# --- the real Anthology files (shared data) -------------------------------------------------


@pytest.fixture(scope="module")
def real(shared_data: Path):
    folder = shared_data / "acl_anthology"
    include = ["J19.xml", "2021.eancs", "2020.lifelongnlp.xml", "2023.splurobonlp.xml"]
    return load_acl(folder, include=include, progress=False)


def test_real_old_style_ids_years_and_markup(real):
    paper = real.papers["J19-1003"]  # J19.xml: volume 1, paper 3
    assert paper.year == 2019
    # <title>Parsing <fixed-case>C</fixed-case>hinese Sentences with Grammatical Relations</title>
    assert paper.title == "Parsing Chinese Sentences with Grammatical Relations"
    assert paper.abstract.startswith("We report our work on building linguistic resources")
    assert "J19-2004" in real.papers and "J19-1001" in real.papers


def test_real_new_style_ids_and_fixed_case_title(real):
    paper = real.papers["2021.eancs-1.2"]
    assert paper.year == 2021
    assert paper.title == "GCDF1: A Goal- and Context- Driven F-Score for Evaluating User Models"
    assert "<" not in paper.abstract and "  " not in paper.abstract


def test_real_author_keys(real):
    # <author id="bill-byrne"><first>Bill</first><last>Byrne</last></author>
    assert real.authors["id:bill-byrne"] == ["2021.eancs-1.2"]
    assert "J19-2004" in real.authors["id:hao-zhang-rochester"]
    # "Alexander Waibel" is a variant of the entry with id alex-waibel
    assert real.authors["id:alex-waibel"] == ["2020.lifelongnlp-1.2"]
    assert "name:alexander waibel" not in real.authors
    # "Antonio Valerio Miceli Barone" -> canonical "Antonio Valerio Miceli-Barone" (no id)
    assert real.authors["name:antonio valerio miceli-barone"] == ["2023.splurobonlp-1.1"]


def test_real_editors_are_not_authors(real):
    # William M. Campbell edited 2020.lifelongnlp-1 but wrote none of its papers
    assert "name:william m. campbell" not in real.authors
    assert real.authors["name:varun kumar"] == ["2020.lifelongnlp-1.3"]  # editor and author


def test_real_skips_and_source(real):
    skips = real.skips.to_json()
    # J19-4001 "Computational Psycholinguistics" has no <abstract>
    assert skips["paper without abstract"] == {"count": 1, "examples": ["J19-4001"]}
    assert "J19-4001" not in real.papers
    assert skips["volume frontmatter (no abstract)"]["count"] == 4  # one per volume with one
    assert real.source["xml_files"] == 4
    assert real.source["kind"] == "acl"
    assert real.source["papers_read"] == len(real.papers) + 1 == 30
    assert real.source["years"] == [2019, 2023]


# --- fixtures written by the tests ----------------------------------------------------------


def test_markup_is_stripped_and_whitespace_normalized(tmp_path: Path):
    title = "<fixed-case>BERT</fixed-case> for <i>all</i>:\n  <tex-math>\\alpha</tex-math>-tuning"
    abstract = "We use <b>bold</b>\n    ideas, see <url>https://x.org</url> .  Done."
    papers = _paper("1", title, abstract, _author("Jane", "Doe"))
    root = _anthology(
        tmp_path, {"2024.tiny.xml": _collection("2024.tiny", _volume("1", "2024", papers))}
    )
    corpus = load_acl(root, progress=False)
    paper = corpus.papers["2024.tiny-1.1"]
    assert paper.title == "BERT for all: \\alpha-tuning"
    assert paper.abstract == "We use bold ideas, see https://x.org . Done."
    assert paper.year == 2024


def test_name_variants_editors_and_id_attributes(tmp_path: Path):
    editors = "<editor><first>Edith</first><last>Tor</last></editor>"
    papers = (
        _paper("1", "One", "A1", _author("Steve", "Abney") + _author("Claudia", "Freitas"))
        + _paper("2", "Two", "A2", _author("Steven", "Abney") + _author("Cláudia", "FREITAS"))
        + _paper("3", "Three", "A3", _author("Wei", "Ai") + _author("Wei", "Ai", "wei-ai-umich"))
        + _paper("4", "Four", "A4", _author("Jane", "Doe", "steven-abney") + editors)
    )
    files = {"P16.xml": _collection("P16", _volume("1", "2016", papers, editors))}
    corpus = load_acl(_anthology(tmp_path, files), progress=False)
    assert corpus.authors["id:steven-abney"] == ["P16-1001", "P16-1002", "P16-1004"]
    assert corpus.authors["name:cláudia freitas"] == ["P16-1001", "P16-1002"]
    assert corpus.authors["name:wei ai"] == ["P16-1003"]  # ambiguous in the yaml: not guessed
    assert corpus.authors["id:wei-ai-umich"] == ["P16-1003"]
    assert "name:edith tor" not in corpus.authors  # volume and paper editors are not authors
    assert len(corpus.authors) == 4
    assert corpus.source["ambiguous_names"] == 1
    assert corpus.source["author_keys"] == {
        "ambiguous_name": 1,
        "id_attribute": 2,
        "name_variants": 4,
    }


def test_without_name_variants_names_are_used_as_written(tmp_path: Path, caplog):
    papers = _paper("1", "One", "A1", _author("Steve", "Abney"))
    files = {"2024.tiny.xml": _collection("2024.tiny", _volume("1", "2024", papers))}
    corpus = load_acl(_anthology(tmp_path, files, variants=None), progress=False)
    assert list(corpus.authors) == ["name:steve abney"]
    assert "name_variants.yaml not found" in corpus.source["warnings"][0]
    assert "name_variants.yaml not found" in caplog.text


def test_skips_are_counted(tmp_path: Path):
    papers = (
        _paper("1", "Kept", "An abstract", _author("A", "B"))
        + _paper("2", "No abstract", None, _author("A", "B"))
        + _paper("3", "Empty abstract", "<fixed-case> </fixed-case>", _author("A", "B"))
        + _paper("4", "<i></i>", "Abstract without title", _author("A", "B"))
        + '<paper id="5"><title>Gone</title><abstract>x</abstract><retracted date="2020-01-01"/>'
        + "</paper>\n"
    )
    files = {"2020.x.xml": _collection("2020.x", _volume("1", "2020", papers))}
    corpus = load_acl(_anthology(tmp_path, files), progress=False)
    assert list(corpus.papers) == ["2020.x-1.1"]
    counts = {reason: row["count"] for reason, row in corpus.skips.to_json().items()}
    assert counts == {
        "paper without abstract": 2,
        "paper without title": 1,
        "retracted or removed paper": 1,
        "volume frontmatter (no abstract)": 1,
    }


def test_include_patterns_and_old_style_workshop_ids(tmp_path: Path):
    w = _collection("W19", _volume("30", "2019", _paper("7", "T", "A", _author("A", "B"))))
    new = _collection(
        "2024.y", _volume("long", "2024", _paper("12", "T2", "A2", _author("A", "B")))
    )
    root = _anthology(tmp_path, {"W19.xml": w, "2024.y.xml": new})
    assert list(load_acl(root, include=["W19"], progress=False).papers) == ["W19-3007"]
    assert list(load_acl(root, include=["2024.*.xml"], progress=False).papers) == ["2024.y-long.12"]
    assert anthology_id("P16", "1", "1") == "P16-1001"
    assert anthology_id("D19", "1", "12") == "D19-1012"
    assert anthology_id("D19", "50", "1") == "D19-5001"  # D19's workshop volumes (real D19.xml)
    with pytest.raises(DataError, match=r"no XML file matches include patterns \['2025\.\*'\]"):
        load_acl(root, include=["2025.*"], progress=False)


def test_parse_error_names_file_and_line(tmp_path: Path):
    text = _collection(
        "2024.bad", _volume("1", "2024", _paper("1", "T", "A", "<author><first>X</last></author>"))
    )
    root = _anthology(tmp_path, {"2024.bad.xml": text})
    with pytest.raises(DataError) as info:
        load_acl(root, progress=False)
    assert info.value.path == str(root / "xml" / "2024.bad.xml")
    assert info.value.line == 6  # the <paper> line with the mismatched tag
    assert "malformed XML (mismatched tag" in str(info.value)


def test_bad_values_name_file_and_line(tmp_path: Path):
    text = _collection("2024.bad", _volume("1", "2024", "    <paper><title>T</title></paper>\n"))
    root = _anthology(tmp_path, {"2024.bad.xml": text})
    with pytest.raises(DataError, match=r"2024\.bad\.xml:6: <paper> without a numeric id"):
        load_acl(root, progress=False)
    (root / "xml" / "2024.bad.xml").write_text(_collection("2024.bad", _volume("1", "soon", "")))
    with pytest.raises(DataError, match=r"2024\.bad\.xml:3: <volume> has no valid <meta><year>"):
        load_acl(root, progress=False)


def test_wrong_layout_names_the_folder(tmp_path: Path):
    with pytest.raises(DataError, match="no such folder") as info:
        load_acl(tmp_path / "missing", progress=False)
    assert info.value.path == str(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no xml/ subfolder"):
        load_acl(tmp_path / "empty", progress=False)
    (tmp_path / "empty" / "xml").mkdir()
    with pytest.raises(DataError, match=r"no \*\.xml files") as info:
        load_acl(tmp_path / "empty", progress=False)
    assert info.value.path == str(tmp_path / "empty" / "xml")


def test_repository_root_and_env_folder(tmp_path: Path, monkeypatch):
    papers = _paper("1", "One", "A1", _author("A", "B"))
    root = _anthology(tmp_path, {"2024.t.xml": _collection("2024.t", _volume("1", "2024", papers))})
    repo = tmp_path / "repo"
    repo.mkdir()
    root.rename(repo / "data")
    assert list(load_acl(repo, progress=False).papers) == ["2024.t-1.1"]
    monkeypatch.setenv("PERSALIGN_ACL_DIR", str(repo / "data"))
    assert load_acl(None, progress=False).source["path"] == str(repo / "data")


def test_source_none_downloads_the_tarball_into_the_cache(tmp_path: Path, monkeypatch):
    papers = _paper("1", "One", "A1", _author("Steve", "Abney"))
    archive = tmp_path / "master.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in {
            "acl-anthology-master/data/xml/2024.t.xml": _collection(
                "2024.t", _volume("1", "2024", papers)
            ),
            "acl-anthology-master/data/yaml/name_variants.yaml": NAME_VARIANTS,
        }.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.delenv("PERSALIGN_ACL_DIR", raising=False)
    monkeypatch.setenv("PERSALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PERSALIGN_ACL_URL", archive.as_uri())
    corpus = load_acl(None, progress=False)
    assert corpus.authors == {"id:steven-abney": ["2024.t-1.1"]}
    assert corpus.source["url"] == archive.as_uri()
    assert corpus.source["path"] == str(tmp_path / "cache" / "acl_anthology")


def test_normalize_name():
    assert normalize_name("  Cláudia\u00a0 ", "FREITAS ") == "cláudia freitas"
    assert normalize_name(None, "Ｋｕｍａｒ") == "kumar"  # NFKC folds full-width letters
    assert normalize_name("A/B", "C") == "a b c"
