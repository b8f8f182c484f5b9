"""docs/tutorial.md runs as written, at toy size: own-data.md's two files and the tutorial's
config are written to a folder, ``persalign run`` runs there (tiny random models in place of
SmolLM2, through ``--set``), its printed lines and findings are checked, ``persalign select``
prints a serve command that names the chosen model's folder and lambda, that command starts a
real server, and the doc's curl and ``openai`` client blocks are sent to it."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .test_cli import run
from .test_own_data_doc import doc_blocks
from .test_serve_server import Server

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "tutorial.md"
DOC_URL = "http://127.0.0.1:8000"


def test_the_tutorial_has_its_config_commands_and_requests():
    assert sorted(doc_blocks(DOC)) == [
        "curl",
        "file: tutorial.yaml",
        "onboard",
        "output",
        "python",
        "run",
        "select",
        "select output",
        "serve",
    ]


def one_line(block: str) -> str:
    return " ".join(block.replace("\\\n", " ").split())


def send(block: str, language: str, url: str) -> str:
    """Run a doc block (bash or python) against the server at ``url``; its stdout."""
    block = block.replace(DOC_URL, url)
    command = ["bash", "-c", block] if language == "bash" else [sys.executable, "-c", block]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_tutorial_runs_end_to_end_at_toy_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_lm
):
    tutorial, own = doc_blocks(DOC), doc_blocks()
    for name in ("prefs.jsonl", "completions.jsonl"):  # step 1: own-data.md's files
        (tmp_path / name).write_text(own[f"file: {name}"], encoding="utf-8")
    (tmp_path / "tutorial.yaml").write_text(tutorial["file: tutorial.yaml"], encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    # step 2: the run, with tiny models
    argv = shlex.split(tutorial["run"])
    assert argv == ["persalign", "run", "tutorial.yaml"]
    toy = {"reward.backbone": tiny_lm, "policies.smollm2-135m.spec": tiny_lm}
    toy |= {"reward.settings.max_steps": "1", "decoding.max_new_tokens": "4"}
    sets = [arg for key, value in toy.items() for arg in ("--set", f"{key}={value}")]
    code, out, err = run([*argv[1:], *sets], capsys)
    assert code == 0, err
    assert one_line(out) == one_line(tutorial["output"])

    # step 3: the findings, inconclusive with 2 users as the doc says
    report = (tmp_path / "runs/tutorial/report/report.md").read_text(encoding="utf-8")
    assert "inconclusive" in report and "holds" in report

    # step 4: select prints the chosen model's folder and lambda as a serve command
    argv = shlex.split(tutorial["select"])
    assert argv[:3] == ["persalign", "select", "runs/tutorial"]
    code, out, err = run([*argv[1:], "--json"], capsys)
    assert code == 0, err
    (pick,) = json.loads(out)["selections"]
    code, out, err = run(argv[1:], capsys)
    assert code == 0, err
    printed = [line.strip() for line in out.splitlines() if "persalign serve" in line]
    assert printed == [pick["serve"]]
    serve = shlex.split(pick["serve"])
    assert serve[:4] == ["persalign", "serve", "--policy", tiny_lm]
    reward = serve[serve.index("--reward") + 1]
    assert reward == pick["best"]["model_dir"] and (tmp_path / reward / "config.json").is_file()
    assert reward.startswith("runs/tutorial/models/own__")
    assert float(serve[serve.index("--lam") + 1]) == pick["best"]["lambda"]
    # the doc shows such a line, and step 5 pastes exactly that line
    shown = one_line(tutorial["select output"]).split(": ", 1)[1]
    assert shown == one_line(tutorial["serve"])
    assert shlex.split(shown)[:4] == [
        "persalign",
        "serve",
        "--policy",
        "bundled:smollm2-135m-instruct",
    ]
    assert [a for a in shlex.split(shown) if a.startswith("--")] == [
        a for a in serve if a.startswith("--")
    ]

    # steps 5 and 6: serve the pasted command; onboard ben; ask with curl and with openai
    server = Server("", Path(), Path(), args=[*serve[2:], "--device", "cpu"])
    try:
        onboarded = json.loads(send(tutorial["onboard"], "bash", server.url))
        assert "error" not in onboarded, onboarded
        reply = json.loads(send(tutorial["curl"], "bash", server.url))
        assert reply["choices"][0]["finish_reason"] in ("stop", "length"), reply
        send(tutorial["python"], "python", server.url)  # exits 0: the client parsed the reply
    finally:
        server.kill()
