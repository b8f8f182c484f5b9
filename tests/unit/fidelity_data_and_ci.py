"""Paper fidelity, issue 12 items 7, 12, 17, 18 and 19 (merged into test_paper_fidelity.py).

Each test fails on the code before the fix: the reason is in its docstring.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from persalign.cli.data import builder_command
from persalign.data import builder as pref_builder
from persalign.data.benchmark_folder import load_benchmark
from persalign.data.builder import build_pref_benchmark
from persalign.data.corpus import Corpus, Paper
from persalign.data.registry import BuildOptions
from persalign.metrics.ranking import per_user_accuracy, rm_accuracy
from persalign.runs.config import load_config
from persalign.runs.sections import BenchmarkConfig
from persalign.types import Preference

from ..integration import test_rewards_tldr as real_tldr
from .test_cli import run as run_cli

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ item 7: PRISM test subset
def test_07_prism_tables_3_7_use_one_query_item_and_table_8_all(monkeypatch: pytest.MonkeyPatch):
    """prism.yaml (Tables 3, 7) keeps one query item per adaptation user; prism_full.yaml
    (Table 8) keeps them all, with the same build, reward settings and methods, so the one-item
    test set is a subset of the full one. Old code: prism.yaml had no max_query and
    prism_full.yaml did not exist."""
    monkeypatch.setenv("PERSALIGN_SHARED_DATA", os.environ.get("PERSALIGN_SHARED_DATA", "/data"))
    subset = load_config(REPO / "configs/paper/prism.yaml")
    full = load_config(REPO / "configs/paper/prism_full.yaml")
    assert subset.benchmarks["prism"].max_query == 1
    assert full.benchmarks["prism"].max_query is None
    assert subset.name != full.name  # separate run folders
    same_build = {"max_query"}
    assert subset.benchmarks["prism"].model_dump(exclude=same_build) == full.benchmarks[
        "prism"
    ].model_dump(exclude=same_build)
    assert subset.seeds == full.seeds
    assert subset.reward == full.reward and subset.methods == full.methods
    assert set(full.policies) <= set(subset.policies) and full.policies
    for label in full.policies:
        assert full.policies[label] == subset.policies[label]
    assert subset.lam == full.lam and not full.decoding.generate


# ------------------------------------------------------------------ item 12: Pref-LaMP build
class RecordingEmbedder:
    """Bag of words hashed into 32 dims; records the truncation the builder asked for."""

    name = "hash-32"
    dim = 32
    max_seq_length = 256  # what a sentence-transformers model reports before the builder sets it

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, sum(map(ord, word)) % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _corpus() -> Corpus:
    """Users with unequal paper counts (3..8), so the means are not the same per group."""
    corpus = Corpus(source={"kind": "synthetic"})
    topics = ["parsing", "translation", "speech", "summarization", "retrieval"]
    for u in range(7):
        for i in range(3 + u % 6):
            topic = topics[(u * 3 + i) % len(topics)]
            pid = f"P{u}-{i}"
            abstract = f"we study {topic} with method {i} " * 2 + pid
            corpus.add_paper(Paper(pid, f"{topic} {u} {i}", abstract, 2015 + i), [f"user{u}"])
    return corpus


def test_12_pref_lamp_embeds_512_tokens_and_reports_items_per_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """Abstracts are embedded from their first 512 tokens by default (builder, run config and
    CLI), and the manifest and ``persalign data stats`` give the mean preferences per train and
    adaptation user beside the paper's 48.8 / 49.2. Old code: 128 everywhere, no
    ``items_per_user`` in the manifest and no paper figures in the stats."""
    assert BuildOptions().embed_max_tokens == 512
    assert BenchmarkConfig().embed_max_tokens == 512
    flags = {p.name: p for p in builder_command("pref-lamp").params}  # data build pref-lamp
    assert flags["embed_max_tokens"].default == 512

    emb = RecordingEmbedder()
    monkeypatch.setattr(pref_builder, "load_embedder", lambda spec, **kw: emb)
    monkeypatch.setattr(
        pref_builder,
        "cached_encode",
        lambda e, texts, batch_size=64, progress=False: e.encode(texts),
    )
    opts = BuildOptions(min_items=3, train_users=4, adapt_users=3, negatives_top_k=2, max_query=1)
    manifest = build_pref_benchmark("pref-lamp", _corpus(), opts, tmp_path / "b")
    assert emb.max_seq_length == 512 and manifest["source"]["embed_max_tokens"] == 512

    bench = load_benchmark(tmp_path / "b")
    train_users = {p.user for p in bench.train}
    adapt_users = {p.user for p in [*bench.support, *bench.query]}
    dropped = manifest["skipped"]["query items beyond --max-query 1"]["count"]
    assert dropped > 0  # --max-query cut something: the figure before the cut is kept too
    want_train = len(bench.train) / len(train_users)
    want_adapt = (len(bench.support) + len(bench.query)) / len(adapt_users)
    want_uncut = (len(bench.support) + len(bench.query) + dropped) / len(adapt_users)
    got = manifest["items_per_user"]
    assert got["train"] == pytest.approx(want_train, abs=1e-3)
    assert got["adapt"] == pytest.approx(want_adapt, abs=1e-3)
    assert got["adapt_before_max_query"] == pytest.approx(want_uncut, abs=1e-3)
    assert got["train"] != got["adapt"]
    assert got["paper"] == {"train": 48.8, "adapt": 49.2, "benchmark": "pref-lamp"}

    code, out, _ = run_cli(["data", "stats", str(tmp_path / "b"), "--json"], capsys)
    stats = json.loads(out)
    assert code == 0 and stats["paper_preferences_per_user"]["train"] == 48.8
    assert stats["paper_preferences_per_user"]["adapt"] == 49.2
    assert stats["train"]["preferences_per_user"]["mean"] == pytest.approx(want_train, abs=1e-3)
    code, out, _ = run_cli(["data", "stats", str(tmp_path / "b")], capsys)
    assert code == 0 and "48.8" in out and "49.2" in out


# ------------------------------------------------------------------ item 17: no skips in CI
PROBE = """
import pytest


def test_uses_shared_data(shared_data):
    assert shared_data.is_dir()


def test_skips_for_a_missing_model():
    pytest.skip("the bundled model is not installed")


def test_importorskip():
    pytest.importorskip("persalign_no_such_module")


@pytest.mark.skipif(True, reason="needs the fork start method")
def test_marked_skipif():
    pass


@pytest.mark.xfail(reason="an expected failure stays one", strict=True)
def test_xfail():
    raise AssertionError
"""
MODULE_PROBE = """
import pytest

ray = pytest.importorskip("persalign_no_such_ray")  # at module level: a collection skip


def test_never_collected():
    pass
"""


def _run_probe(folder: Path, target: str = "main/tests/test_probe.py", **env: str):
    """Run a probe in a subprocess; each test's (or module's) outcome: passed, failed, skipped
    or xfailed."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PERSALIGN_")}
    environ.update(env)
    xml = folder / "junit.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
         target],
        cwd=folder, env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    outcomes: dict[str, str] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif skipped is not None:
            outcome = "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
        else:
            outcome = "passed"
        outcomes[case.get("name", "")] = outcome
    return outcomes


def test_17_ci_turns_every_skip_into_a_failure_and_has_no_guessed_data_folder(tmp_path: Path):
    """The repo's tests/conftest.py, copied beside probe files that skip in each way CI could
    hit (shared data, an uninstalled model, importorskip in a test and at module level, a
    skipif marker), is run in a subprocess. Under PERSALIGN_REQUIRE_SHARED_DATA=1 every one
    fails (an xfail stays one); without it they skip. ``<root>/shared/data`` (here
    tmp_path/shared/data) is not used when PERSALIGN_SHARED_DATA is unset. Old code: only the
    shared-data fixture failed (the other skips passed CI), and the fallback found the guessed
    folder."""
    # the copied conftest's parents[2] is tmp_path, as /work is for /work/main/tests/conftest.py
    tests = tmp_path / "main" / "tests"
    (tests / "collect").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", tests / "conftest.py")
    (tests / "test_probe.py").write_text(PROBE)
    (tests / "collect" / "test_module_probe.py").write_text(MODULE_PROBE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    missing = str(tmp_path / "missing")
    skips = {"test_uses_shared_data", "test_skips_for_a_missing_model", "test_importorskip",
             "test_marked_skipif"}  # fmt: skip

    ci = _run_probe(tmp_path, PERSALIGN_REQUIRE_SHARED_DATA="1", PERSALIGN_SHARED_DATA=missing)
    assert ci == {**dict.fromkeys(skips, "failed"), "test_xfail": "xfailed"}
    report = (tmp_path / "junit.xml").read_text()
    assert "the bundled model is not installed" in report and "missing" in report

    unset = _run_probe(tmp_path, PERSALIGN_REQUIRE_SHARED_DATA="1")  # no fallback folder
    assert unset["test_uses_shared_data"] == "failed"
    local = _run_probe(tmp_path)  # a developer's machine: skips stay skips
    assert local == {**dict.fromkeys(skips, "skipped"), "test_xfail": "xfailed"}

    module = "main/tests/collect"  # a module skipped while it is collected
    assert set(_run_probe(tmp_path, module, PERSALIGN_REQUIRE_SHARED_DATA="1").values()) == {
        "failed"
    }
    assert set(_run_probe(tmp_path, module).values()) == {"skipped"}


# ------------------------------------------------------------------ item 18: real data
def test_18_real_tldr_test_asserts_learning_by_measured_margins():
    """The learning check is an integration test in tests/integration/test_rewards_tldr.py,
    ``test_trained_rm_beats_chance_and_untrained_on_real_tldr_query_pairs`` (Global RM-v2
    trained on the real TL;DR train workers beats chance and its untrained self on 80 seeded
    query pairs; measured 0.675 vs 0.425). It trains for
    minutes on the shared data, so it is not repeated here: this pins its margins. Old code:
    the integration test asserted only ``0 <= acc <= 1`` and had no margins."""
    test = real_tldr.test_trained_rm_beats_chance_and_untrained_on_real_tldr_query_pairs
    assert callable(test)
    assert real_tldr.MIN_ACCURACY >= 0.55  # chance is 0.5
    assert real_tldr.MIN_GAIN >= 0.05  # over the same model before training
    assert real_tldr.QUERY_PAIRS >= 50  # enough pairs that the margins are not luck


# ------------------------------------------------------------------ item 19: Eq. 2
class TableRM:
    """Rewards looked up by (user, response): a reward model with hand-set outputs."""

    def __init__(self, table: dict[tuple[str, str], float]):
        self.table = table

    def sequence_rewards(self, prompts, responses, users) -> torch.Tensor:
        assert len(prompts) == len(responses) == len(users)
        return torch.tensor([self.table[(u, r)] for u, r in zip(users, responses, strict=True)])


def test_19_rm_accuracy_per_user_then_mean_ties_are_misses():
    """Eq. 2 on hand-set rewards: user a 3 pairs (win, tie, loss) = 1/3, user b 1 pair (tie)
    = 0, user c 4 pairs (3 wins, 1 loss) = 3/4. Ties are misses under Eq. 2's strict ">".
    mean over users = (1/3 + 0 + 3/4) / 3 = 13/36; pooled over pairs = 4/8. Ties as half would
    give 7/12 and 5/8; a pooled "mean" 1/2; per user counted by pairs, not by users, 1/2."""
    rewards = {
        ("a", "a-win"): 2.0, ("a", "a-lose"): 1.0,
        ("a", "a-tie1"): 0.5, ("a", "a-tie2"): 0.5,
        ("a", "a-bad"): 0.0, ("a", "a-good"): 1.0,
        ("b", "b-tie1"): 3.0, ("b", "b-tie2"): 3.0,
        ("c", "w1"): 1.0, ("c", "l1"): -1.0,
        ("c", "w2"): 0.25, ("c", "l2"): 0.0,
        ("c", "w3"): 5.0, ("c", "l3"): 4.5,
        ("c", "bad"): -2.0, ("c", "good"): 2.0,
    }  # fmt: skip
    pairs = [  # users interleaved: grouping must be by user, not by position
        ("c", "w1", "l1"),
        ("a", "a-win", "a-lose"),
        ("b", "b-tie1", "b-tie2"),
        ("c", "w2", "l2"),
        ("a", "a-tie1", "a-tie2"),
        ("c", "bad", "good"),
        ("a", "a-bad", "a-good"),
        ("c", "w3", "l3"),
    ]
    prefs = [Preference(f"{u}/{i}", u, f"prompt {i}", c, r) for i, (u, c, r) in enumerate(pairs)]
    result = rm_accuracy(TableRM(rewards), prefs)
    assert result["per_user"] == pytest.approx({"a": 1 / 3, "b": 0.0, "c": 3 / 4}, rel=1e-12)
    assert result["mean"] == pytest.approx(13 / 36, rel=1e-12)
    assert result["pooled"] == pytest.approx(4 / 8, rel=1e-12)
    assert result["pairs"] == 8 and result["users"] == 3
    # the same from hits directly (per_user_accuracy is what model jobs and cells share)
    hits = [rewards[(u, c)] > rewards[(u, r)] for u, c, r in pairs]
    assert per_user_accuracy(prefs, hits) == result
