"""Training memory and throughput on the shared TL;DR at default settings: one prompt per pair.

    python benchmarks/bench_train.py [--steps 2] [--methods global-rm,lore]
    python benchmarks/bench_train.py --frozen [--pairs 16 --methods global-rm,vpl]  # smoke size

Builds the TL;DR benchmark from ``$PERSALIGN_SHARED_DATA/tldr`` into a temporary folder and trains
with the bundled SmolLM2-135M-Instruct at the default config (prompts up to 512 tokens, responses
128, 8 pairs a step, gradient checkpointing, 8192-token micro-batches, shared prompt). Prints one
JSON object:

- ``peak_rss_mib_default``: peak RSS of a subprocess that only loads and trains global-rm for
  ``--steps`` steps (so the peak is the training's alone), beside ``estimated_peak_mib_default``;
- per method: pairs/s of the two-sequence path (``shared_prompt=false``, no token budget, so
  it runs the forward once as before) and of the shared-prompt path, ``shared_prompt_speedup``;
  ``max_rel_reward_diff`` (max |r_shared - r_two| / max |r_two| over one batch's chosen and
  rejected rewards) and ``max_rel_grad_diff`` (the same per parameter tensor of the loss's
  gradient, divided by at least a tenth of the largest gradient, the largest over tensors);
  ``first_steps_loss_rel_diff``: the losses of the first ``--steps`` steps with 1024-token
  micro-batches against no budget, largest relative difference.

``--frozen`` (``backbone_training="frozen"``, TL;DR with the PAL split, default token limits,
every hidden-state method unless ``--methods``; the feature cache starts empty, in a temporary
``$PERSALIGN_CACHE`` that links the real one's converted models) prints instead:

- ``frozen_epoch_all_methods_s``: the one feature pass plus every method built (one shared
  backbone, no adapters) and trained for one full epoch of the training split (or ``--pairs``);
  ``frozen_method_seconds`` per method, ``frozen_feature_seconds``;
- ``frozen_feature_pairs_per_s``: training pairs / feature-pass seconds, beside
  ``lora_train_pairs_per_s`` (global-rm with LoRA, ``--lora-steps`` steps of 8 pairs, same
  limits) and their ratio ``frozen_feature_over_lora``;
- ``frozen_vs_lora_zero_max_rel_diff``: per method, the trained head's rewards of
  ``--check-pairs`` training pairs from the cached features against the LoRA path with the LoRA
  weights at zero (a LoRA backbone, never trained, with the head and users copied in), max over
  methods of max |r_frozen - r_lora| / max |r_lora|;
- ``second_pass_computed``: responses a second feature pass computed (0: all reused).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(benchmark: str, steps: int) -> None:
    """Train global-rm at the defaults for ``steps`` steps; print the peak RSS as JSON."""
    from persalign.data import load_benchmark
    from persalign.logs import setup_logging
    from persalign.rewards import create
    from persalign.sysinfo import peak_rss_mib

    setup_logging(0)
    bench = load_benchmark(benchmark)
    rm = create("global-rm", device="cpu", max_steps=steps)
    rm.fit(bench.train, progress=False)
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))


def max_rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def path_diffs(rm, pairs) -> dict[str, float]:
    """Rewards and gradients of one batch through both paths."""
    import torch

    from persalign.rewards.engine.pair_rewards import pair_rewards

    out = {}
    for shared in (True, False):
        rm.config = rm.config.model_copy(update={"shared_prompt": shared})
        rm.zero_grad(set_to_none=True)
        chosen, rejected = pair_rewards(rm, pairs)
        rm.pair_loss(chosen, rejected, pairs).backward()
        grads = {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}
        out[shared] = (torch.cat([chosen, rejected]).detach(), grads)
    rm.zero_grad(set_to_none=True)
    rm.config = rm.config.model_copy(update={"shared_prompt": True})
    # per tensor, relative to itself or a tenth of the largest gradient: a head bias shared by
    # chosen and rejected has a gradient that cancels to ~0 (rounding noise over noise)
    scale = 0.1 * max(float(g.abs().max()) for g in out[False][1].values())
    grads = [
        float((out[True][1][n] - g).abs().max()) / max(float(g.abs().max()), scale)
        for n, g in out[False][1].items()
    ]
    return {
        "max_rel_reward_diff": max_rel(out[True][0], out[False][0]),
        "max_rel_grad_diff": max(grads),
    }


def fit_seconds(method: str, pairs, steps: int, **config) -> tuple[float, list[float]]:
    from persalign.rewards import create

    rm = create(method, device="cpu", max_steps=steps, **config)
    start = time.perf_counter()
    history = rm.fit(pairs, progress=False)
    return time.perf_counter() - start, [h["loss"] for h in history]


def measure(method: str, train, steps: int) -> dict[str, float]:
    import torch

    from persalign.io import SkipReport
    from persalign.rewards import create
    from persalign.rewards.engine.training import usable_pairs

    row: dict[str, float] = {}
    old, _ = fit_seconds(method, train, steps, shared_prompt=False, max_tokens_per_microbatch=None)
    new, losses = fit_seconds(method, train, steps)
    pairs = 8 * steps
    row["pairs_per_second_two_sequence"] = round(pairs / old, 3)
    row["pairs_per_second_shared_prompt"] = round(pairs / new, 3)
    row["shared_prompt_speedup"] = round(old / new, 3)
    _, chunked = fit_seconds(method, train, steps, max_tokens_per_microbatch=1024)
    _, whole = fit_seconds(method, train, steps, max_tokens_per_microbatch=None)
    row["first_steps_loss_rel_diff"] = max(
        abs(a - b) / abs(b) for a, b in zip(chunked, whole, strict=True)
    )
    rm = create(method, device="cpu")
    batch = usable_pairs(train, SkipReport())[:8]
    if rm.personalized:
        torch.manual_seed(0)
        users = sorted({p.user for p in batch})
        rm.set_users(users, rm.init_train_users(len(users)))
        rm.user_table.requires_grad_(True)
    rm.train()
    row.update(path_diffs(rm, batch))
    row["first_losses"] = losses
    return row


def frozen_benchmark(train, methods: list[str], args) -> dict:
    """The ``--frozen`` figures (see the module doc)."""
    import torch

    from persalign.io import SkipReport
    from persalign.models import load_tokenizer
    from persalign.rewards import METHODS, create
    from persalign.rewards.engine.backbone import Backbone, LoraSettings
    from persalign.rewards.engine.features import training_features
    from persalign.rewards.engine.pair_rewards import pair_rewards
    from persalign.rewards.engine.training import usable_pairs

    pairs = usable_pairs(train, SkipReport())[: args.pairs]
    spec = "bundled:smollm2-135m-instruct"
    started = time.perf_counter()
    frozen = Backbone.load(spec, None, device="cpu")
    tokenizer = load_tokenizer(spec)

    def build(method: str, backbone, **config):
        cls = METHODS.get(method)
        return cls(cls.config_class(device="cpu", **config), backbone, tokenizer)

    first = build(methods[0], frozen, backbone_training="frozen")
    table = training_features(first, pairs, progress=False)
    feature_seconds = table.seconds
    trained, seconds = {}, {}
    for method in methods:
        tick = time.perf_counter()
        rm = build(method, frozen, backbone_training="frozen")
        rm.fit(pairs, progress=False)
        trained[method], seconds[method] = rm, round(time.perf_counter() - tick, 2)
    total = time.perf_counter() - started
    again = training_features(first, pairs, progress=False).computed

    lora_rm = create("global-rm", device="cpu", max_steps=args.lora_steps)
    tick = time.perf_counter()
    history = lora_rm.fit(pairs, progress=False)
    lora_rate = sum(h["pairs"] for h in history) / (time.perf_counter() - tick)

    lora_backbone = Backbone.load(spec, LoraSettings(), device="cpu")  # B = 0: LoRA at zero
    check = pairs[: args.check_pairs]
    diffs = {}
    for method, rm in trained.items():
        reference = build(method, lora_backbone)
        if rm.personalized:
            reference.set_users(list(rm.user_ids), rm.user_table.detach())
        head = {n: t for n, t in rm.state_dict().items() if not n.startswith("backbone.")}
        reference.load_state_dict(head, strict=False)
        rm.training_features = training_features(rm, check, progress=False)
        with torch.no_grad():
            got = torch.cat(pair_rewards(rm, check))
            expect = torch.cat(pair_rewards(reference, check))
        rm.training_features = None
        diffs[method] = max_rel(got, expect)
    feature_rate = len(pairs) / feature_seconds
    return {
        "benchmark": "train_tldr_frozen",
        "pairs": len(pairs),
        "methods": methods,
        "frozen_epoch_all_methods_s": round(total, 2),
        "frozen_feature_seconds": round(feature_seconds, 2),
        "frozen_method_seconds": seconds,
        "frozen_feature_pairs_per_s": round(feature_rate, 3),
        "lora_train_pairs_per_s": round(lora_rate, 3),
        "frozen_feature_over_lora": round(feature_rate / lora_rate, 2),
        "frozen_vs_lora_zero_rel_diff": diffs,
        "frozen_vs_lora_zero_max_rel_diff": max(diffs.values()),
        "second_pass_computed": again,
    }


def isolated_feature_cache(tmp: str) -> None:
    """A fresh ``$PERSALIGN_CACHE`` (no stored features) that links the real cache's models."""
    from persalign.models import cache_dir

    models = cache_dir() / "models"
    fresh = Path(tmp) / "cache"
    fresh.mkdir()
    if models.is_dir():
        (fresh / "models").symlink_to(models, target_is_directory=True)
    os.environ["PERSALIGN_CACHE"] = str(fresh)


def main() -> None:
    root = Path(__file__).parents[2] / "shared/data"
    shared = os.environ.get("PERSALIGN_SHARED_DATA", str(root))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tldr", default=str(Path(shared) / "tldr"))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--methods", default=None, help="default: global-rm,lore (--frozen: 9)")
    parser.add_argument("--frozen", action="store_true", help="frozen-backbone figures")
    parser.add_argument("--pairs", type=int, default=None, help="--frozen: first N train pairs")
    parser.add_argument("--lora-steps", type=int, default=2, help="--frozen: LoRA steps timed")
    parser.add_argument("--check-pairs", type=int, default=8, help="--frozen: pairs compared")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps)
        return
    import torch

    from persalign.data import BUILDERS, BuildOptions, load_benchmark
    from persalign.logs import setup_logging
    from persalign.rewards import METHODS, create
    from persalign.rewards.engine.memory import ModelShape, estimate_training_memory

    setup_logging(0)
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        bench_dir = Path(tmp) / "tldr"
        split = str(Path(args.tldr) / "pal_worker_ids.json")
        BUILDERS.get("tldr")(BuildOptions(source=args.tldr, split_file=split), bench_dir)
        if args.frozen:
            isolated_feature_cache(tmp)
            hidden = [m for m in METHODS.names() if METHODS.get(m).reads_hidden_states]
            methods = args.methods.split(",") if args.methods else hidden
            train = load_benchmark(bench_dir).train
            print(json.dumps(frozen_benchmark(train, methods, args), indent=2))
            return
        methods = (args.methods or "global-rm,lore").split(",")
        command = [sys.executable, __file__, "--child", str(bench_dir), "--steps", str(args.steps)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"]
        rm = create("global-rm", device="cpu")
        estimate = estimate_training_memory(ModelShape.of(rm.backbone), rm.config)
        train = load_benchmark(bench_dir).train
        result = {
            "benchmark": "train_tldr_default",
            "steps": args.steps,
            "peak_rss_mib_default": peak,
            "estimated_peak_mib_default": estimate.total_mib,
            "methods": {m: measure(m, train, args.steps) for m in methods},
        }
    rows = result["methods"].values()
    result["shared_prompt_speedup"] = min(r["shared_prompt_speedup"] for r in rows)
    for key in ("max_rel_reward_diff", "max_rel_grad_diff", "first_steps_loss_rel_diff"):
        result[key] = max(r[key] for r in rows)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
