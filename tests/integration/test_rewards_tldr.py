"""Reward models train on the real TL;DR batches with the bundled SmolLM2, and learn.

The LoRE test checks the mechanics (fit, adapt leaves theta bitwise unchanged, scores, save and
load); the Global RM-v2 test checks learning: trained, it ranks held-out adaptation users' query
pairs better than chance and better than itself before training, by margins measured on this
data with these seeds.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import pytest
import torch

from persalign.data import BUILDERS, BuildOptions, load_benchmark
from persalign.metrics.ranking import rm_accuracy
from persalign.rewards import create, load

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

QUERY_PAIRS = 80  # a seeded sample of the adaptation users' query pairs (706 in all)
TRAIN_STEPS = 10  # 80 of the 215 train-user pairs, one pass
# Measured with these settings and seeds (SmolLM2-135M, float32 CPU, torch 2.13): untrained
# 0.425 (34/80), trained 0.675 (54/80). The thresholds leave 6 and 8 pairs of room for float
# differences between machines, not for a model that learned nothing.
MIN_ACCURACY = 0.60  # chance is 0.5
MIN_GAIN = 0.15  # over the same model before training


@pytest.fixture(scope="module")
def tldr_bench(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    tldr = shared_data / "tldr"
    out = tmp_path_factory.mktemp("tldr") / "bench"
    BUILDERS.get("tldr")(
        BuildOptions(source=str(tldr), split_file=str(tldr / "pal_worker_ids.json")), out
    )
    return load_benchmark(out)


def test_lore_trains_adapts_and_scores_on_real_tldr(tldr_bench, tmp_path: Path):
    bench = tldr_bench
    rm = create(
        "lore",
        seed=0,
        max_steps=3,
        batch_size=2,
        max_prompt_tokens=96,
        max_response_tokens=32,
        device="cpu",
    )
    history = rm.fit(bench.train, progress=False, log_path=tmp_path / "log.jsonl")
    assert len(history) == 3 and all(math.isfinite(r["loss"]) for r in history)
    user = bench.adapt_users()[0]
    before = {k: v.clone() for k, v in rm.state_dict().items() if k != "user_table"}
    rm.adapt(user.user, list(user.support)[:4])
    after = rm.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    query = list(user.query)[:4]
    result = rm_accuracy(rm, query)
    assert result["users"] == 1 and 0.0 <= result["mean"] <= 1.0
    prefix = rm.prefix_rewards(
        [q.prompt for q in query[:2]], [q.chosen for q in query[:2]], [user.user] * 2
    )
    assert torch.isfinite(prefix.rewards).all() and (prefix.lengths > 0).all()
    rm.save(tmp_path / "model")
    again = load(tmp_path / "model")
    torch.testing.assert_close(
        again.sequence_rewards([query[0].prompt], [query[0].chosen], [user.user]),
        rm.sequence_rewards([query[0].prompt], [query[0].chosen], [user.user]),
    )


def test_trained_rm_beats_chance_and_untrained_on_real_tldr_query_pairs(tldr_bench):
    """Global RM-v2 (mean token reward), seed 0, trained for 10 steps of 8 pairs on the train
    workers' comparisons (PAL's split), scored on 80 seeded query pairs of the adaptation
    workers (Eq. 2, pooled: the model is global). Prompts are cut to 8 tokens (the reward reads
    the summary; in these query pairs the chosen summary is the longer one 60% of the time) and
    the head learns at 1e-3 (appendix F's 1e-4 gained little in 10 steps when simulated on
    frozen features; 1e-3 reached about 0.6 there).
    Measured: untrained 0.425, trained 0.675 (MIN_ACCURACY, MIN_GAIN above)."""
    bench = tldr_bench
    query = random.Random(0).sample(list(bench.query), QUERY_PAIRS)
    rm = create(
        "global-rm-v2",
        seed=0,
        max_steps=TRAIN_STEPS,
        batch_size=8,
        head_lr=1e-3,
        max_prompt_tokens=8,
        max_response_tokens=48,  # every TL;DR summary here is at most 52 tokens; most fit
        use_chat_template=False,
        eval_batch_size=16,
        device="cpu",
    )
    before = rm_accuracy(rm, query)["pooled"]
    history = rm.fit(bench.train, progress=False)
    after = rm_accuracy(rm, query)["pooled"]
    log.info("TL;DR query accuracy: untrained %.4f, trained %.4f", before, after)
    assert len(history) == TRAIN_STEPS
    assert after >= MIN_ACCURACY, (before, after)
    assert after >= before + MIN_GAIN, (before, after)
