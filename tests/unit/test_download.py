"""Downloads through file:// URLs: success, HTML error pages, sizes, content checks, tarballs."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from persalign.data import download
from persalign.data.download import (
    download_acl,
    fetch,
    fetch_once,
    looks_like_html,
    safe_extract,
)
from persalign.errors import DownloadError

COLLECTION = """<?xml version='1.0' encoding='UTF-8'?>
<collection id="2024.tiny">
  <volume id="1" type="proceedings">
    <meta><booktitle>Tiny</booktitle><year>2024</year><venue>tiny</venue></meta>
    <paper id="1">
      <title>A Title</title>
      <author><first>Jane</first><last>Doe</last></author>
      <abstract>An abstract.</abstract>
      <bibkey>doe-2024-title</bibkey>
    </paper>
  </volume>
</collection>
"""


def _tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_fetch_file_url_writes_the_file_atomically(tmp_path: Path):
    src = tmp_path / "src.json"
    src.write_text(json.dumps({"golds": [1, 2]}), encoding="utf-8")
    dest = tmp_path / "cache" / "out.json"
    got = fetch(src.as_uri(), dest, kind="json", expected_size=src.stat().st_size, progress=False)
    assert got == dest
    assert json.loads(dest.read_text(encoding="utf-8")) == {"golds": [1, 2]}
    assert [p.name for p in dest.parent.iterdir()] == ["out.json"]  # no temp file left


@pytest.mark.parametrize(
    "body",
    [b"<!DOCTYPE html><html><body>Not found</body></html>", b"\xef\xbb\xbf \n  <HTML lang=en>"],
)
def test_fetch_rejects_an_html_page_and_leaves_nothing(tmp_path: Path, body: bytes):
    src = tmp_path / "dev_questions.json"
    src.write_bytes(body)
    dest = tmp_path / "cache" / "dev_questions.json"
    with pytest.raises(DownloadError, match="returned an HTML page, not data") as info:
        fetch(src.as_uri(), dest, kind="json", progress=False)
    assert src.as_uri() in str(info.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_looks_like_html_only_for_html():
    assert looks_like_html(b"  <!doctype HTML>")
    assert not looks_like_html(b'[{"id": "<html>"}]')
    assert not looks_like_html(b"\x1f\x8b\x08")


def test_fetch_size_checks(tmp_path: Path):
    src = tmp_path / "data.json"
    src.write_text("[1, 2, 3]", encoding="utf-8")
    with pytest.raises(DownloadError, match=r"got 9 bytes, expected 100"):
        fetch(src.as_uri(), tmp_path / "a.json", expected_size=100, progress=False)
    with pytest.raises(DownloadError, match=r"got 9 bytes, expected at least 1000"):
        fetch(src.as_uri(), tmp_path / "b.json", min_size=1000, progress=False)
    assert not (tmp_path / "a.json").exists()
    assert not (tmp_path / "b.json").exists()


def test_fetch_detects_a_truncated_body_against_content_length(tmp_path: Path, monkeypatch):
    src = tmp_path / "data.json"
    src.write_text("[1, 2, 3]", encoding="utf-8")

    short = io.BytesIO(b"[1, 2, 3]")
    short.headers = {"Content-Length": "50"}  # type: ignore[attr-defined]
    monkeypatch.setattr(download, "_open", lambda url, timeout: short)
    with pytest.raises(DownloadError, match="got 9 bytes, the server announced 50"):
        fetch("https://example.org/data.json", tmp_path / "c.json", progress=False)


def test_fetch_content_checks_and_missing_url(tmp_path: Path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[{"id": 1}', encoding="utf-8")
    with pytest.raises(DownloadError, match="is not valid JSON"):
        fetch(bad_json.as_uri(), tmp_path / "x.json", kind="json", progress=False)
    not_gzip = tmp_path / "plain.tar.gz"
    not_gzip.write_bytes(b"plain text, not an archive")
    with pytest.raises(DownloadError, match="is not gzip data"):
        fetch(not_gzip.as_uri(), tmp_path / "y.tar.gz", kind="tar.gz", progress=False)
    missing = (tmp_path / "nope.json").as_uri()
    with pytest.raises(DownloadError, match=f"{missing}: download failed"):
        fetch(missing, tmp_path / "z.json", progress=False)


def test_big_json_gets_a_bracket_check(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(download, "JSON_FULL_CHECK_LIMIT", 10)
    good = tmp_path / "good.json"
    good.write_text('[{"id": "1"}, {"id": "2"}]\n', encoding="utf-8")
    fetch(good.as_uri(), tmp_path / "ok.json", kind="json", progress=False)
    cut = tmp_path / "cut.json"
    cut.write_text('[{"id": "1"}, {"id": ', encoding="utf-8")
    with pytest.raises(DownloadError, match="is not a complete JSON value"):
        fetch(cut.as_uri(), tmp_path / "no.json", kind="json", progress=False)


def test_fetch_once_does_not_download_again(tmp_path: Path):
    src = tmp_path / "data.json"
    src.write_text("[1]", encoding="utf-8")
    dest = tmp_path / "cache" / "data.json"
    fetch_once(src.as_uri(), dest, kind="json", progress=False)
    src.unlink()  # a second download would fail
    assert fetch_once(src.as_uri(), dest, kind="json", progress=False) == dest
    assert dest.read_text(encoding="utf-8") == "[1]"


def test_safe_extract_rejects_path_traversal(tmp_path: Path):
    archive = _tarball(
        tmp_path / "evil.tar.gz",
        {"top/data/xml/a.xml": b"<collection/>", "top/../../escape.txt": b"gotcha"},
    )
    with pytest.raises(
        DownloadError, match=re.escape("unsafe path in the archive: 'top/../../escape.txt'")
    ):
        safe_extract(archive, tmp_path / "out", lambda parts: "/".join(parts[1:]))
    assert not (tmp_path / "escape.txt").exists()
    absolute = _tarball(tmp_path / "abs.tar.gz", {"/etc/passwd-copy": b"x"})
    with pytest.raises(DownloadError, match="unsafe path"):
        safe_extract(absolute, tmp_path / "out", lambda parts: None)


def test_safe_extract_refuses_selected_links(tmp_path: Path):
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("top/data/xml/a.xml")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DownloadError, match="is not a regular file"):
        safe_extract(archive, tmp_path / "out", lambda parts: parts[-1])
    assert not (tmp_path / "out" / "a.xml").exists()


def test_download_acl_extracts_only_the_data_files(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PERSALIGN_CACHE", str(tmp_path / "cache"))
    archive = _tarball(
        tmp_path / "master.tar.gz",
        {
            "acl-anthology-master/README.md": b"readme",
            "acl-anthology-master/data/xml/2024.tiny.xml": COLLECTION.encode(),
            "acl-anthology-master/data/xml/schema.rnc": b"start = collection",
            "acl-anthology-master/data/yaml/name_variants.yaml": b"- canonical: {last: D}\n",
            "acl-anthology-master/data/yaml/venues.yaml": b"{}",
            "acl-anthology-master/python/tests/data/xml/2099.fake.xml": b"<collection/>",
        },
    )
    folder = download_acl(archive.as_uri(), progress=False)
    assert folder == tmp_path / "cache" / "acl_anthology"
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["persalign-complete.json", "xml/2024.tiny.xml", "yaml/name_variants.yaml"]
    marker = json.loads((folder / "persalign-complete.json").read_text(encoding="utf-8"))
    assert marker["url"] == archive.as_uri() and marker["xml_files"] == 1
    archive.unlink()  # complete: a second call reuses the folder without downloading
    assert download_acl(archive.as_uri(), progress=False) == folder


def test_download_acl_rejects_an_archive_without_xml(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PERSALIGN_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "other.tar.gz"
    archive.write_bytes(gzip.compress(b""))  # an empty gzip stream: not a tar archive
    with pytest.raises(DownloadError, match=r"not a readable tar\.gz archive"):
        download_acl(archive.as_uri(), progress=False)
    _tarball(archive, {"repo-main/README.md": b"hello"})
    with pytest.raises(DownloadError, match="no data/xml"):
        download_acl(archive.as_uri(), progress=False)
    assert not (tmp_path / "cache" / "acl_anthology").exists()
