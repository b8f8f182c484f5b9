"""On the bundled policy, the oracle's true gain rises with lambda: reward-guided decoding with
the simulated users' own reward does move generations toward it (else every null result on a sim
benchmark would be about the setup). Lambda 0 (the policy's greedy output) against lambda 20,
over 32 query prompts (16 users), paired per prompt; the 95% bootstrap CI over users excludes 0."""

from __future__ import annotations

from pathlib import Path

import pytest

import persalign.rewards as rewards
from persalign.data import load_benchmark
from persalign.decoding import GenerationRequest, Policy, create_decoder
from persalign.metrics.true_gain import true_gain
from persalign.report.verdicts import paired_difference

from ..unit.sim_source import write_source
from ..unit.test_sim_builder import build
from .test_bundled_models import SMOLLM, _require_package

pytestmark = pytest.mark.integration


def test_the_oracles_true_gain_rises_with_lambda(tmp_path: Path):
    _require_package("smollm2-135m-instruct")
    out = build(write_source(tmp_path / "src"), tmp_path / "sim", users=40, groups=4,
                adapt_users=16, items_per_user=4)  # fmt: skip
    bench = load_benchmark(out)
    assert len(bench.query) == 32
    policy = Policy.load(SMOLLM, device="cpu")
    oracle = rewards.create("oracle", backbone=SMOLLM)
    oracle.use_benchmark(bench)
    requests = [GenerationRequest(q.id, q.user, q.prompt) for q in bench.query]
    outputs = {}
    for lam in (0.0, 20.0):
        decoder = create_decoder(
            "args", policy, reward_model=oracle, lam=lam, k=5, max_new_tokens=8,
            stop=("\n",), batch_size=16,
        )  # fmt: skip
        outputs[lam] = [
            {"user": g.user, "id": g.id, "text": g.text} for g in decoder.generate(requests)
        ]
    gain = true_gain(bench, outputs[20.0], outputs[0.0])
    per_user = gain["per_user"]
    mean, ci, n = paired_difference(per_user, dict.fromkeys(per_user, 0.0), n_boot=1000)
    assert n == 16 and mean is not None and ci is not None
    assert ci[0] > 0, (mean, ci)
