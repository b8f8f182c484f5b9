"""benchmarks/bench_oracle_curve.py with ``--model``: a saved reward model guides ARGS on a sim
benchmark, and the curve's numbers equal a naive recomputation from the JSON (tiny models)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from persalign.data import load_benchmark
from persalign.decoding import GenerationRequest, Policy, create_decoder
from persalign.metrics.true_rm_accuracy import true_rm_accuracy
from persalign.serve.sharing import load_reward_for

from .test_fused_args import frozen_rm
from .test_sim_builder import naive_reward
from .test_sim_ceilings import build
from .test_sim_pilots import script

USERS, LAM, TOKENS = 3, 4.0, 4


def naive_gain(folder: Path, guided: list, plain: list) -> float:
    """Mean over users of the per-user mean r_u(guided) - r_u(plain), from the JSON alone."""
    truth = json.loads((folder / "true_reward.json").read_text())
    prompts = {
        json.loads(line)["id"]: json.loads(line)["prompt"]
        for line in (folder / "query.jsonl").read_text().splitlines()
    }
    per_user: dict[str, list[float]] = {}
    for a, b in zip(guided, plain, strict=True):
        prompt = prompts[a.id]
        diff = naive_reward(truth, prompt, a.text, a.user) - naive_reward(
            truth, prompt, b.text, b.user
        )
        per_user.setdefault(a.user, []).append(diff)
    return sum(sum(d) / len(d) for d in per_user.values()) / len(per_user)


def test_a_saved_model_draws_the_curve_the_json_gives(tmp_path, tiny_lm, monkeypatch, capsys):
    folder = build(tmp_path, noise=1.0)
    rm = frozen_rm("global-rm-v2", tiny_lm)  # a frozen backbone, a head large enough to steer
    rm.save(tmp_path / "rm")
    argv = [
        "bench_oracle_curve.py", str(folder), "--policy", tiny_lm, "--model", str(tmp_path / "rm"),
        "--lambdas", "0", str(LAM), "--max-users", str(USERS), "--max-new-tokens", str(TOKENS),
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    script("bench_oracle_curve").main()
    out = json.loads(capsys.readouterr().out)
    assert out["reward"] == str(tmp_path / "rm") and out["users"] == USERS

    # the same decoding by hand: the saved model on the policy's weights, lambda 0 and LAM
    bench = load_benchmark(folder)
    keep = sorted({q.user for q in bench.query})[:USERS]
    query = [q for q in bench.query if q.user in keep]
    policy = Policy.load(tiny_lm, device="cpu", max_prompt_tokens=80)
    guide = load_reward_for(tmp_path / "rm", policy)
    guide.use_benchmark(bench)
    assert out["true_rm_accuracy"] == pytest.approx(true_rm_accuracy(guide, bench)["mean"])
    requests = [GenerationRequest(q.id, q.user, q.prompt) for q in query]
    torch.manual_seed(0)
    texts = {}
    for lam in (0.0, LAM):
        decoder = create_decoder(
            "args", policy, reward_model=guide, lam=lam, k=5, max_new_tokens=TOKENS,
            stop=("\n",), batch_size=16,
        )  # fmt: skip
        texts[lam] = decoder.generate(requests, progress=False)
    zero, guided = out["curve"]
    assert (zero["lambda"], zero["true_gain"], zero["outputs_changed"]) == (0.0, 0.0, 0)
    changed = sum(a.text != b.text for a, b in zip(texts[LAM], texts[0.0], strict=True))
    assert changed > 0 and guided["outputs_changed"] == changed  # the reward steered
    expected = naive_gain(folder, texts[LAM], texts[0.0])
    assert guided["true_gain"] == pytest.approx(expected, abs=1e-4)
    lo, hi = guided["ci95"]
    assert lo <= guided["true_gain"] <= hi and guided["users"] == USERS
