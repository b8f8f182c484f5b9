"""Bad inputs to the CLI (issue 16): one line on stderr naming the problem, exit 2, nothing written.

Each row writes its own tiny inputs, runs ``python -m persalign.cli`` in a subprocess (as a user
would) and checks: exit code 2, exactly one non-empty line on stderr containing the expected
words, no ``Traceback``, and that no output appeared (or the one that was there is unchanged).
Every row fails before any model loads. Rows marked ``in_process`` run the same ``main()`` in
this interpreter (a fresh one costs ~10 s of imports; the checks are the same).

Unwritable outputs: a folder chmod 0o555 where the test can be stopped by it; as root (where
permission bits stop no write) the same path is made to lie under a regular file instead, which
stops root too. ``unwritable_mode()`` says which one ran; either way the error is one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .test_cli import run, toy_benchmark


@dataclass
class Case:
    """argv (``{tmp}`` is the test's folder), the words stderr must hold, what must not appear."""

    argv: list[str]
    words: list[str]
    setup: Callable[[Path], None] = lambda tmp: None
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards
    unchanged: list[str] = field(default_factory=list)  # files/folders that must stay the same
    stdout_words: list[str] = field(default_factory=list)  # words stdout must hold
    in_process: bool = False


def _bench(tmp: Path) -> None:
    toy_benchmark(tmp / "bench")


def _bench_bad_utf8(tmp: Path) -> None:
    toy_benchmark(tmp / "bench")
    train = tmp / "bench" / "train.jsonl"
    lines = train.read_bytes().splitlines(keepends=True)
    train.write_bytes(lines[0] + b'{"id": "t/x", "user": "t\xff"}\n' + b"".join(lines[1:]))


def _tldr_bad_utf8(tmp: Path) -> None:
    (tmp / "tldr").mkdir()
    (tmp / "tldr" / "comparisons_batch1.jsonl").write_bytes(b'{"info": "caf\xe9"}\n')


def _config_bad_utf8(tmp: Path) -> None:
    (tmp / "config.yaml").write_bytes(b"name: demo\n# caf\xe9\n")


def _config_python_tag(tmp: Path) -> None:
    text = "name: demo\nseeds: !!python/object:os.system [echo]\n"
    (tmp / "config.yaml").write_text(text, encoding="utf-8")


def _bench_meta_string(tmp: Path) -> None:
    toy_benchmark(tmp / "bench")
    query = tmp / "bench" / "query.jsonl"
    lines = query.read_text(encoding="utf-8").splitlines()
    obj = json.loads(lines[1])
    obj["meta"] = "oops"
    lines[1] = json.dumps(obj)
    query.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _model_without_method(tmp: Path) -> None:
    toy_benchmark(tmp / "bench")
    (tmp / "model").mkdir()
    config = {"format": "persalign-reward/1", "config": {}, "users": []}
    (tmp / "model" / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _out_is_a_file(tmp: Path) -> None:
    toy_benchmark(tmp / "bench")
    (tmp / "out").write_text("keep me\n", encoding="utf-8")


def _out_is_a_folder(tmp: Path) -> None:
    toy_benchmark(tmp / "bench")
    (tmp / "gen.jsonl").mkdir()


def _bench_identical_pairs(tmp: Path) -> None:
    toy_benchmark(tmp / "bench", same=True)


def unwritable_mode(folder: Path) -> str:
    """Make ``folder`` a place nothing can be written under: 'chmod 0o555' where that stops this
    process, else (root) 'regular file' (a file where the folder would be)."""
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return "chmod 0o555"
    folder.chmod(0o755)
    folder.rmdir()
    folder.write_text("a file, not a folder\n", encoding="utf-8")
    return "regular file"


def _unwritable(tmp: Path) -> None:
    unwritable_mode(tmp / "ro")


def _bench_unwritable(tmp: Path) -> None:
    toy_benchmark(tmp / "bench")
    unwritable_mode(tmp / "ro")


def _bench_changed(tmp: Path) -> None:
    toy_benchmark(tmp / "bench")
    train = tmp / "bench" / "train.jsonl"  # still valid JSON lines: only the hash can tell
    train.write_text(train.read_text(encoding="utf-8").replace('"c"', '"C"'), encoding="utf-8")


def _bench_changed_twice(tmp: Path) -> None:
    _bench_changed(tmp)
    (tmp / "bench" / "completions.jsonl").unlink()


def _bench_without_manifest(tmp: Path) -> None:
    toy_benchmark(tmp / "bench")
    (tmp / "bench" / "manifest.json").unlink()


def _model_without_weights(tmp: Path) -> None:
    toy_benchmark(tmp / "bench")
    (tmp / "model").mkdir()
    config = {"format": "persalign-reward/1", "method": "global-rm", "config": {}, "users": []}
    (tmp / "model" / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _empty(rel: str) -> Callable[[Path], None]:
    """An empty source file at ``rel`` (its folders made)."""

    def setup(tmp: Path) -> None:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(b"")

    return setup


PREF_ROW = '{"user": "u%d", "prompt": "p%d", "chosen": "c", "rejected": "%s"}\n'


def _prefs(tmp: Path, rejected: str = "r") -> None:
    rows = [PREF_ROW % (u, i, rejected) for u in range(4) for i in range(3)]
    (tmp / "prefs.jsonl").write_text("".join(rows), encoding="utf-8")


def _prefs_and_empty_completions(tmp: Path) -> None:
    _prefs(tmp)
    _empty("comps.jsonl")(tmp)


def _config_with_plugin_path(tmp: Path) -> None:
    text = (REPO / "configs" / "demo.yaml").read_text(encoding="utf-8")
    (tmp / "config.yaml").write_text(text + "\nplugins: [../plugins/evil]\n", encoding="utf-8")


def _selection_out_is_a_folder(tmp: Path) -> None:
    (tmp / "run").mkdir()
    (tmp / "sel.json").mkdir()


REPO = Path(__file__).resolve().parents[2]
JSONL = ["data", "build", "jsonl", "--source", "{tmp}/prefs.jsonl", "--out", "{tmp}/out"]
BUILD = ["data", "build", "tldr", "--source", "{tmp}/tldr", "--out", "{tmp}/out"]
GENERATE = ["generate", "--benchmark", "{tmp}/bench", "--policy", "{tmp}/no-policy"]
OUT_GEN = ["--out", "{tmp}/gen.jsonl"]
TRAIN = ["train", "--benchmark", "{tmp}/bench", "--method", "global-rm"]

CASES = {
    "jsonl-not-utf8": Case(
        ["data", "stats", "{tmp}/bench", "--no-verify"],
        ["train.jsonl:2:", "not UTF-8"],
        _bench_bad_utf8,
    ),
    "tldr-comparisons-not-utf8": Case(
        BUILD, ["comparisons_batch1.jsonl:1:", "not UTF-8"], _tldr_bad_utf8, absent=["out"]
    ),
    "config-not-utf8": Case(
        ["run", "{tmp}/config.yaml", "--out", "{tmp}/runs"],
        ["config.yaml:2:", "not UTF-8"],
        _config_bad_utf8,
        absent=["runs"],
    ),
    "config-python-tag": Case(
        ["run", "{tmp}/config.yaml", "--out", "{tmp}/runs"],
        ["config.yaml:2:", "not valid YAML", "python/object"],
        _config_python_tag,
        absent=["runs"],
    ),
    "meta-not-an-object": Case(
        ["data", "stats", "{tmp}/bench", "--no-verify"],
        ["query.jsonl:2:", "'meta'"],
        _bench_meta_string,
    ),
    "reward-model-without-method": Case(
        ["evaluate", "rm", "--model", "{tmp}/model", "--benchmark", "{tmp}/bench"],
        ["config.json", "'method'"],
        _model_without_method,
    ),
    "max-query-0": Case([*BUILD, "--max-query", "0"], ["max_query"], absent=["out"]),
    "max-items-negative": Case([*BUILD, "--max-items", "-1"], ["max_items"], absent=["out"]),
    "batch-size-0": Case([*BUILD, "--batch-size", "0"], ["batch_size"], absent=["out"]),
    "negative-lambda": Case(
        [*GENERATE, "--decoder", "args", "--reward", "{tmp}/no-model", "--lam", "-1", *OUT_GEN],
        ["lam", ">= 0", "allow_negative_lam"],
        _bench,
        absent=["gen.jsonl"],
    ),
    "build-out-is-a-file": Case(BUILD, ["--out", "is a file"], _out_is_a_file, unchanged=["out"]),
    "train-out-is-a-file": Case(
        [*TRAIN, "--out", "{tmp}/out"], ["--out", "is a file"], _out_is_a_file, unchanged=["out"]
    ),
    "generate-out-is-a-folder": Case(
        [*GENERATE, "--decoder", "zero-shot", *OUT_GEN],
        ["--out", "is a folder"],
        _out_is_a_folder,
        unchanged=["gen.jsonl"],
    ),
    "no-usable-training-pairs": Case(
        [*TRAIN, "--out", "{tmp}/model"],
        ["no usable training pairs", "identical responses"],
        _bench_identical_pairs,
        absent=["model"],
    ),
    "build-out-unwritable": Case(
        [*BUILD[:-1], "{tmp}/ro/out"], ["--out", "cannot write there", "/ro"], _unwritable
    ),
    "train-out-unwritable": Case(
        [*TRAIN, "--out", "{tmp}/ro/model"],
        ["--out", "cannot write there", "/ro"],
        _bench_unwritable,
        in_process=True,
    ),
    "generate-out-unwritable": Case(
        [*GENERATE, "--decoder", "zero-shot", "--out", "{tmp}/ro/gen.jsonl"],
        ["--out", "cannot write there", "/ro"],
        _bench_unwritable,
        in_process=True,
    ),
    "run-out-unwritable": Case(
        ["run", str(REPO / "configs" / "demo.yaml"), "--out", "{tmp}/ro"],
        ["--out", "cannot write there", "/ro"],
        _unwritable,
        in_process=True,
    ),
    "benchmark-file-changed": Case(
        ["data", "stats", "{tmp}/bench"],
        ["train.jsonl:", "sha256 differs", "--no-verify"],
        _bench_changed,
        in_process=True,
    ),
    "benchmark-without-manifest": Case(
        [*TRAIN, "--out", "{tmp}/model"],
        ["manifest.json:", "missing"],
        _bench_without_manifest,
        absent=["model"],
        in_process=True,
    ),
    "data-verify-names-every-file": Case(
        ["data", "verify", "{tmp}/bench"],
        ["2 file(s) differ"],
        _bench_changed_twice,
        stdout_words=["train.jsonl: sha256 differs", "completions.jsonl: missing"],
        in_process=True,
    ),
    "jsonl-completions-empty": Case(
        [*JSONL, "--completions", "{tmp}/comps.jsonl", "--min-items", "1"],
        ["comps.jsonl", "the file is empty", "completions"],
        _prefs_and_empty_completions,
        absent=["out"],
        in_process=True,
    ),
    "jsonl-every-record-skipped": Case(
        [*JSONL, "--min-items", "1"],
        ["prefs.jsonl", "no preferences to split", "12 chosen equals rejected"],
        lambda tmp: _prefs(tmp, rejected="c"),
        absent=["out"],
        in_process=True,
    ),
    "select-out-is-a-folder": Case(
        ["select", "{tmp}/run", "--out", "{tmp}/sel.json"],
        ["--out", "sel.json", "is a folder"],
        _selection_out_is_a_folder,
        unchanged=["sel.json"],
        in_process=True,
    ),
    "evaluate-out-is-a-folder": Case(
        ["evaluate", "policy", "--benchmark", "{tmp}/bench", "--scorer", "base", *OUT_GEN],
        ["--out", "is a folder"],
        _out_is_a_folder,
        unchanged=["gen.jsonl"],
        in_process=True,
    ),
    "config-plugin-is-a-path": Case(
        ["run", "{tmp}/config.yaml", "--out", "{tmp}/runs"],
        ["config.yaml", "plugin '../plugins/evil'", "not a module name"],
        _config_with_plugin_path,
        absent=["runs"],
        in_process=True,
    ),
    "ls-plugin-is-a-path": Case(
        ["ls", "--plugin", "../plugins/evil"],
        ["plugin '../plugins/evil'", "not a module name"],
        in_process=True,
    ),
    "reward-model-without-weights": Case(
        ["evaluate", "rm", "--model", "{tmp}/model", "--benchmark", "{tmp}/bench"],
        ["model:", "missing weights.safetensors"],
        _model_without_weights,
        unchanged=["model"],
        in_process=True,
    ),
}

EMPTY_SOURCES = {  # dataset: (its --source, the empty file under it, what the error expects)
    "jsonl": ("prefs.jsonl", "prefs.jsonl", "JSON lines of preferences"),
    "tldr": ("tldr", "tldr/comparisons_batch1.jsonl", "JSON lines of comparisons"),
    "prism": ("prism", "prism/conversations.jsonl", "JSON lines of conversations"),
    "pref-lamp": ("lamp", "lamp/dev_questions.json", "expected JSON"),
}
for dataset, (source, rel, expected) in EMPTY_SOURCES.items():
    CASES[f"{dataset}-source-empty"] = Case(
        ["data", "build", dataset, "--source", f"{{tmp}}/{source}", "--out", "{tmp}/out"],
        [Path(rel).name, "the file is empty", expected],
        _empty(rel),
        absent=["out"],
        in_process=True,
    )


def snapshot(path: Path) -> object:
    if path.is_dir():
        return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))
    return path.read_bytes()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CASES[name]
    case.setup(tmp_path)
    before = {rel: snapshot(tmp_path / rel) for rel in case.unchanged}
    argv = ["-q", *(arg.replace("{tmp}", str(tmp_path)) for arg in case.argv)]
    try:
        if case.in_process:
            code, out, err = run(argv, capsys)
        else:
            proc = subprocess.run(
                [sys.executable, "-m", "persalign.cli", *argv],
                capture_output=True,
                text=True,
                timeout=300,
            )
            code, out, err = proc.returncode, proc.stdout, proc.stderr
    finally:
        if (tmp_path / "ro").is_dir():
            (tmp_path / "ro").chmod(0o755)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for word in case.words:
        assert word in lines[0], lines[0]
    for word in case.stdout_words:
        assert word in " ".join(out.split()), out
    for rel in case.absent:
        assert not (tmp_path / rel).exists(), rel
    ro = tmp_path / "ro"
    assert not ro.exists() or ro.is_file() or not any(ro.iterdir()), "wrote under --out"
    for rel, old in before.items():
        assert snapshot(tmp_path / rel) == old, rel


BROKEN_PLUGINS = {  # module text: words of the error
    "raise RuntimeError('no GPU here')\n": ["RuntimeError: no GPU here"],
    "def broken(:\n": ["SyntaxError"],
    "from . import sibling\n": ["ImportError"],
    "import no_such_dependency_xyz\n": ["ModuleNotFoundError", "no_such_dependency_xyz"],
}


@pytest.mark.parametrize("source", list(BROKEN_PLUGINS))
@pytest.mark.parametrize("where", ["ls", "run"])
def test_a_plugin_that_fails_to_import_is_one_line_naming_it_and_why(
    source: str,
    where: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"broken_plugin_{where}_{list(BROKEN_PLUGINS).index(source)}"
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    if where == "ls":
        argv = ["ls", "--plugin", name]
    else:
        text = (REPO / "configs" / "demo.yaml").read_text(encoding="utf-8")
        (tmp_path / "config.yaml").write_text(f"{text}\nplugins: [{name}]\n", encoding="utf-8")
        argv = ["run", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "runs")]
    code, _, err = run(["-q", *argv], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert f"plugin {name!r} cannot be imported" in lines[0]
    for word in BROKEN_PLUGINS[source]:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()
