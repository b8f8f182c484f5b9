"""One file is enough: the four worked examples of docs/extending.md, copied verbatim into a
temporary package, run as plugins of a tiny experiment (in a fresh process, so the registries of
this one stay as they are), and found in the run's cells and report tables."""

from __future__ import annotations

import csv
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "extending.md"
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>[\w/]+\.py) -->\n```python\n(?P<code>.*?)```", re.S)


def doc_files() -> dict[str, str]:
    """relative path -> code of every ``<!-- file: ... -->`` block of docs/extending.md."""
    return {m["path"]: m["code"] for m in FILE_BLOCK.finditer(DOC.read_text(encoding="utf-8"))}


def write_plugins(root: Path) -> list[str]:
    files = doc_files()
    (root / "toyplug").mkdir()
    (root / "toyplug" / "__init__.py").write_text("")
    for rel, code in files.items():
        (root / rel).write_text(code)
    return sorted(rel[:-3].replace("/", ".") for rel in files)


def write_preferences(path: Path) -> None:
    """6 users x 4 preferences (prompts differ per user), plus one skipped record."""
    rows = []
    for u in range(6):
        for i in range(4):
            prompt = f"Write a title for note {i} of user {u}."
            rows.append({"user": f"u{u}", "prompt": prompt, "chosen": f"good {i}", "rejected": "x"})
    rows.append({"user": "u0", "prompt": "p", "chosen": "same", "rejected": "same"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_cli(argv: list[str], root: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "persalign.cli", "-q", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_the_doc_has_one_worked_example_per_kind():
    files = doc_files()
    assert sorted(files) == [
        "toyplug/contrarian.py",
        "toyplug/linear_rm.py",
        "toyplug/title_length.py",
        "toyplug/toy_jsonl.py",
        "toyplug/z_args.py",
    ]
    registrations = "".join(files.values())
    counts = {
        "@register_method(": 1,
        "@register_decoder(": 2,
        "@register_metric(": 1,
        "@BUILDERS.": 1,
    }
    for decorator, count in counts.items():
        assert registrations.count(decorator) == count, decorator


def test_one_file_each_adds_a_method_decoder_metric_and_dataset_to_a_run(tmp_path, tiny_lm):
    modules = write_plugins(tmp_path)
    prefs = tmp_path / "prefs.jsonl"
    write_preferences(prefs)
    config = {
        "name": "plug",
        "seeds": [0],
        "threads": 1,
        "plugins": modules,
        "benchmarks": {
            "toy": {
                "dataset": "toy-jsonl",
                "source": str(prefs),
                "train_users": 4,
                "adapt_users": 2,
                "min_items": 2,
            }
        },
        "reward": {"backbone": tiny_lm, "settings": {"max_steps": 2, "batch_size": 4}},
        "methods": {"linear-rm": {"decoder": "z-args"}},
        "policies": {"tiny": {"spec": tiny_lm, "params_m": 0.1, "scale": "tiny"}},
        "baselines": {"decoders": {"contrarian": {"rank": 1}}},
        "decoding": {"max_new_tokens": 4, "k": 3, "batch_size": 2},
        "lambda": {"grid": [1.0]},
        "metrics": {
            "generation": {"bertscore_model": None},
            "perplexity": False,
            "title_length": {"max_words": 1},  # the plugin metric's own option
        },
    }
    path = tmp_path / "plug.yaml"
    path.write_text(yaml.safe_dump(config))
    done = run_cli(["run", str(path), "--out", str(tmp_path / "runs")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "plug"

    # the dataset: built by the plugin's builder, its skip counted in the manifest
    manifest = json.loads((run_dir / "benchmarks/toy/manifest.json").read_text())
    assert manifest["skipped"]["chosen equals rejected"]["count"] == 1

    # the reward method: trained, and scored in its cell (decoded by the z-args plugin)
    method = json.loads((run_dir / "cells/toy__tiny__linear-rm__s0/metrics.json").read_text())
    assert 0.0 <= method["rm_accuracy"]["mean"] <= 1.0 and method["personalized"] is False
    cell = json.loads((run_dir / "cells/toy__tiny__linear-rm__s0/spec.json").read_text())
    assert "z-args" in json.dumps(cell)

    # the decoder: a baseline row whose outputs differ from the policy's own choices
    def texts(cell: str) -> list[str]:
        lines = (run_dir / "cells" / cell / "generations.jsonl").read_text().splitlines()
        return [json.loads(line)["tokens"] for line in lines]

    contrarian, zero_shot = texts("toy__tiny__contrarian__s0"), texts("toy__tiny__zero-shot__s0")
    assert len(contrarian) == len(zero_shot) > 0 and contrarian != zero_shot

    # the metric: in every cell's metrics.json and in the report's metrics table
    cells = sorted(run_dir.glob("cells/*/metrics.json"))
    assert len(cells) == 3
    for cell in cells:
        value = json.loads(cell.read_text())["title_length"]
        assert 0 < value["mean"] <= 1  # max_words: 1 reached compute()
    table = list(csv.reader((run_dir / "report/toy/metrics.csv").open()))
    header = table[0]
    assert "Words" in header
    method = header.index("Method")
    assert {row[method] for row in table[1:]} >= {"contrarian", "linear-rm", "zero-shot"}
    words = {row[method]: row[header.index("Words")] for row in table[1:]}
    assert all(words[row] not in ("", "--") for row in ("contrarian", "linear-rm", "zero-shot"))
    assert "Words" in (run_dir / "report/toy/metrics.md").read_text()

    # `persalign ls --plugin M` lists what M registers; plain `ls` does not import plugins
    plain = run_cli(["ls"], tmp_path)
    assert plain.returncode == 0 and "linear-rm" not in plain.stdout
    argv = ["ls", *(arg for m in modules for arg in ("--plugin", m))]
    listing = run_cli(argv, tmp_path)
    assert listing.returncode == 0, listing.stderr
    for name in ("linear-rm", "contrarian", "z-args", "title_length", "toy-jsonl"):
        assert name in listing.stdout


@pytest.mark.parametrize("module", ["toyplug.contrarian", "toyplug.title_length"])
def test_a_plugin_registers_on_import_only(tmp_path, module):
    write_plugins(tmp_path)
    code = (
        "import importlib, persalign.decoding as d, persalign.metrics as m\n"
        "before = set(d.DECODERS.names()) | set(m.METRICS.names())\n"
        f"importlib.import_module({module!r})\n"
        "after = set(d.DECODERS.names()) | set(m.METRICS.names())\n"
        "print(sorted(after - before))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = {"toyplug.contrarian": "['contrarian']", "toyplug.title_length": "['title_length']"}
    assert out.stdout.strip() == expected[module]


# --- a dataset option given on the command line; a reward-guided decoder (docs/extending.md) ---


def test_a_builder_option_is_a_data_build_flag_that_reaches_the_benchmark(tmp_path):
    write_plugins(tmp_path)
    prefs = tmp_path / "prefs.jsonl"
    write_preferences(prefs)
    build = ["data", "build", "--plugin", "toyplug.toy_jsonl", "toy-jsonl"]
    helped = run_cli([*build, "--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "--skip-user" in helped.stdout and "--min-items" in helped.stdout
    out = tmp_path / "bench"
    argv = [*build, "--source", str(prefs), "--out", str(out), "--min-items", "2"]
    done = run_cli([*argv, "--skip-user", "u5", "--skip-user", "u4"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"]["user left out (--skip-user)"]["count"] == 8
    assert manifest["options"]["skip_user"] == ["u5", "u4"]
    users = {
        json.loads(line)["user"]
        for part in ("train", "support", "query")
        for line in (out / f"{part}.jsonl").read_text().splitlines()
    }
    assert users == {"u0", "u1", "u2", "u3"}


@pytest.fixture
def z_args(tmp_path, monkeypatch):
    """The doc's toyplug.z_args, imported in this process; the decoder registry and
    sys.modules are as they were afterwards."""
    from persalign.decoding import DECODERS

    write_plugins(tmp_path)
    DECODERS.names()  # the built-in decoders are registered before the registry is copied
    monkeypatch.setattr(DECODERS, "_entries", dict(DECODERS._entries))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield importlib.import_module("toyplug.z_args")
    finally:
        for name in [m for m in sys.modules if m == "toyplug" or m.startswith("toyplug.")]:
            del sys.modules[name]


def z_scores(logp: list[float], rewards: list[float], lam: float) -> list[float]:
    """The z-args rule, one candidate at a time: log pi + lam * (r - mean) / (std + 1e-6)."""
    mean, std = statistics.fmean(rewards), statistics.stdev(rewards)
    return [lp + lam * (r - mean) / (std + 1e-6) for lp, r in zip(logp, rewards, strict=True)]


def test_the_reward_guided_decoder_is_its_naive_loop_per_user(z_args, tiny_lm, tiny_lm_other):
    import persalign.rewards as rewards
    from persalign.decoding import DECODERS, GenerationRequest, Policy
    from persalign.errors import ConfigError

    from ..reference import naive_args_steps

    policy = Policy.load(tiny_lm_other, device="cpu")
    rm = rewards.create("mpu", backbone=tiny_lm, device="cpu", seed=0)
    rm.set_users(
        ["u1", "u2"], torch.randn(2, rm.user_dim, generator=torch.Generator().manual_seed(0))
    )
    decoder_class = DECODERS.get("z-args")
    assert decoder_class is z_args.ZArgsDecoder and decoder_class.takes("lam")
    with pytest.raises(ConfigError, match="needs a reward model"):
        decoder_class(policy, None)

    prompts = ["Say about cat sun", "Hi", "Write a line about the owl", "Title: cats on mats"]
    requests = [GenerationRequest(f"q{i}", f"u{1 + i % 2}", p) for i, p in enumerate(prompts)]
    settings = z_args.ZArgsSettings(lam=3.0, k=5, max_new_tokens=6, batch_size=4)
    fast = decoder_class(policy, rm, settings).generate(requests, progress=False)
    for request, out in zip(requests, fast, strict=True):
        naive, _ = naive_args_steps(
            policy, rm, request.prompt, request.user, 5, 3.0, 6, combine=z_scores
        )
        assert out.tokens == naive, request.id
    greedy = decoder_class(policy, rm, settings.model_copy(update={"lam": 0.0})).generate(requests)
    steered = decoder_class(policy, rm, settings.model_copy(update={"lam": 50.0})).generate(
        requests
    )
    assert [g.tokens for g in greedy] != [g.tokens for g in steered], "the reward must steer"


METRIC_OPTION = """
import toyplug.title_length
from persalign.errors import ConfigError
from persalign.metrics import CellContext, compute_cell_metrics
from persalign.runs.config import metrics_settings, parse_config
from persalign.types import Benchmark

def run_config(metrics):
    return parse_config({"benchmarks": {"b": {"path": "b"}}, "metrics": metrics,
                         "policies": {"p": {"spec": "p", "params_m": 1}}})

gens = [{"user": "u", "id": "1", "text": "one two three four"}]
for metrics in ({}, {"title_length": {"max_words": 2}}):
    ctx = CellContext(kind="baseline", method="zero-shot", decoder="zero-shot", seed=0,
                      settings=metrics_settings(run_config(metrics)),
                      benchmark=Benchmark("b", (), (), ()), generations=gens)
    print(compute_cell_metrics(ctx)["title_length"]["mean"])
try:
    run_config({"title_length": {"max_word": 2}})
except ConfigError as exc:
    print(exc)
"""


def test_a_metric_option_set_in_the_run_config_reaches_compute(tmp_path):
    """metrics.title_length.max_words (the doc's metric, its option in its own file) from a run
    config to compute(); a typo names the option and the closest one."""
    write_plugins(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    out = subprocess.run(
        [sys.executable, "-c", METRIC_OPTION], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    default, capped, error = out.stdout.strip().splitlines()
    assert (float(default), float(capped)) == (4.0, 2.0)
    assert "metrics.title_length.max_word: unknown option; did you mean 'max_words'?" in error
