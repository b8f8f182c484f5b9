"""How much of the simulated users' reward a frozen backbone's features carry: the linear-probe
ceiling of the sim study's frozen-head reward methods (prints one JSON object).

    python benchmarks/probe_sim_features.py runs/study_sim/sim           # the study's benchmark
    python benchmarks/probe_sim_features.py runs/study_sim/sim --max-prompts 40   # smoke

Every (prompt, response) text of the benchmark's train, support and query pairs is read once by
the backbone as the study's reward models read it (frozen, chat template, 80 prompt and 24
response tokens: ``configs/study_sim.yaml``), through the same remembered states evaluation uses
(``rewards/engine/frozen_states.py``). Two pooled features per text: the state at the response's
last token (what the heads of Global RM, LoRE, MPU, PAL, PReF and VPL read) and the mean over
the response's tokens.

Ridge regression then predicts the 9 standardized attributes phi from these features, with
5-fold cross-validation over prompts (all of a prompt's texts in one fold, so no prompt is both
seen and predicted; features z-scored on the training folds; the ridge strength picked from a
grid by the mean held-out R^2, which flatters the probe slightly). Reported:

- ``r2``: the held-out R^2 of each attribute;
- ``probe_true_rm_accuracy``: each adaptation user's query pairs ordered by
  r_u-hat = w_u . phi-hat (the held-out prediction), scored against r_u's own order (ties of r_u
  left out), per user then the mean with a 95% bootstrap CI over users. This is what a linear
  head on these features reaches when it is given every text's exact attributes, far more than
  the study's 768 noisy pairs: if it is near 50%, no amount of such data teaches a frozen head
  the users' reward; if it is high, the study's methods are short of data, not of features.
- ``pairwise``: heads on the same (z-scored) features trained on the benchmark's own labelled
  train pairs, as the methods are, but given the structure (``pairwise_probe``): one head for
  everyone; one head per simulated group, each user scored by its own group's (the group is
  given); the same heads with each user's picked from its support labels (what adaptation
  could do). If the group-known head is well above the methods' true RM accuracy, the data and
  features carry the users' reward and the methods do not find its structure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
PRECISIONS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)  # the pairwise heads' prior precision grid
FOLDS = 5


def ridge_predictions(x, y, folds, alpha):
    """Held-out predictions [N, d] of ``y`` from ``x`` [N, H], one ridge fit per fold."""
    import numpy as np

    out = np.zeros_like(y)
    for fold in range(FOLDS):
        test = folds == fold
        train = ~test
        mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
        xt = (x[train] - mean) / std
        centre = y[train].mean(axis=0)
        gram = xt.T @ xt + alpha * np.eye(x.shape[1])
        coef = np.linalg.solve(gram, xt.T @ (y[train] - centre))  # [H, d]
        out[test] = ((x[test] - mean) / std) @ coef + centre
    return out


def r2(y, pred):
    """Per-column R^2 of held-out predictions."""
    resid = ((y - pred) ** 2).sum(axis=0)
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - resid / total


def true_accuracy(scores, truth, query):
    """Per user, the share of its query pairs a scorer (pref -> margin) orders as r_u does (r_u
    ties left out, a zero margin a miss); then the mean and 95% CI over users."""
    import numpy as np

    from persalign.report.verdicts import paired_difference

    hits: dict[str, list[bool]] = {}
    for q in query:
        pair = truth.rewards([q.prompt] * 2, [q.chosen, q.rejected], [q.user] * 2)
        true_margin = float(pair[0] - pair[1])
        if true_margin == 0:
            continue
        guess = scores(q)
        hits.setdefault(q.user, []).append(guess != 0 and (guess > 0) == (true_margin > 0))
    per_user = {u: float(np.mean(h)) for u, h in hits.items()}
    mean, ci, n = paired_difference(per_user, dict.fromkeys(per_user, 0.0), n_boot=1000)
    return {
        "true_rm_accuracy": None if mean is None else round(mean, 4),
        "ci95": None if ci is None else [round(ci[0], 4), round(ci[1], 4)],
        "users": n,
        "pairs": sum(len(h) for h in hits.values()),
    }


def pairwise_probe(x, row, bench, truth):
    """Linear heads on the frozen features trained on the benchmark's own labelled train pairs
    (Bradley-Terry MAP, the ceilings' Newton fit; prior precision by 5-fold cross-validation over
    train users on held-out log-likelihood), scored like the ``true_rm_accuracy`` metric:

    - ``one_head``: one head for every user (a global reward);
    - ``group_known``: one head per simulated group, each user scored by its own group's head
      (what a low-rank method would learn if the groups were given);
    - ``group_from_support``: the same heads, the user's picked by the likelihood of its support
      labels (what such a method could do at adaptation).

    The study's methods learn from the same pairs without the group labels."""
    import numpy as np

    from persalign.report.ceilings import best_group, bradley_terry_fit

    def have(p):  # both texts were read (all of them unless --max-prompts)
        return (p.prompt, p.chosen) in row and (p.prompt, p.rejected) in row

    train = [p for p in bench.train if have(p)]
    users = sorted({p.user for p in train})
    random.Random(0).shuffle(users)
    fold = {u: k % FOLDS for k, u in enumerate(users)}
    group = truth.groups

    def diff(p):  # [H] chosen minus rejected
        return x[row[(p.prompt, p.chosen)]] - x[row[(p.prompt, p.rejected)]]

    def diffs(prefs):  # [N, H]
        return np.stack([diff(p) for p in prefs])

    def loglik(w, d):
        return float(-np.logaddexp(0.0, -(d @ w)).sum())

    def cv_precision(split):  # split: pref -> a key (the group, or one key for everyone)
        def score(precision):
            total = 0.0
            for k in range(FOLDS):
                for key in {split(p) for p in train}:
                    fit = [p for p in train if split(p) == key and fold[p.user] != k]
                    held = [p for p in train if split(p) == key and fold[p.user] == k]
                    if fit and held:
                        total += loglik(bradley_terry_fit(diffs(fit), 1.0, precision), diffs(held))
            return total

        return max(PRECISIONS, key=score)

    out = {}
    precision = cv_precision(lambda p: 0)
    head = bradley_terry_fit(diffs(train), 1.0, precision)
    query = [q for q in bench.query if have(q)]

    out["one_head"] = {
        "precision": precision,
        **true_accuracy(lambda q: float(diff(q) @ head), truth, query),
    }
    precision = cv_precision(lambda p: group[p.user])
    keys = sorted({group[p.user] for p in train})
    by_group = {g: [p for p in train if group[p.user] == g] for g in keys}
    fits = [bradley_terry_fit(diffs(by_group[g]), 1.0, precision) for g in keys]
    heads = np.stack(fits)  # [K, H]
    support: dict[str, list] = {}
    for p in filter(have, bench.support):
        support.setdefault(p.user, []).append(p)
    picked = {u: best_group(diffs(s), heads, 1.0) for u, s in support.items()}
    query = [q for q in query if q.user in picked]  # a user without support: no pick
    right = sum(keys[k] == group[u] for u, k in picked.items())
    known = [q for q in query if group[q.user] in keys]  # a group with no train user: no head
    out["group_known"] = {
        "precision": precision,
        **true_accuracy(lambda q: float(diff(q) @ heads[keys.index(group[q.user])]), truth, known),
    }
    out["group_from_support"] = {
        "precision": precision,
        "right_group": f"{right}/{len(picked)}",
        **true_accuracy(lambda q: float(diff(q) @ heads[picked[q.user]]), truth, query),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", help="A sim benchmark folder (persalign data build sim).")
    parser.add_argument("--backbone", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--max-prompts", type=int, default=0, help="0: every prompt")
    args = parser.parse_args()

    import numpy as np
    import torch

    import persalign.rewards as rewards
    from persalign.data import load_benchmark
    from persalign.logs import setup_logging
    from persalign.rewards.engine.features import pool_states
    from persalign.rewards.engine.frozen_states import padded_states

    setup_logging(0)
    torch.manual_seed(0)
    bench = load_benchmark(Path(args.benchmark))
    truth = bench.true_reward
    if truth is None:
        raise SystemExit(f"{args.benchmark} is not a sim benchmark (no true_reward.json)")
    pairs = [*bench.train, *bench.support, *bench.query]
    texts = list(dict.fromkeys((p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)))
    prompts = list(dict.fromkeys(p for p, _ in texts))
    if args.max_prompts:
        prompts = prompts[: args.max_prompts]
        texts = [t for t in texts if t[0] in set(prompts)]
    rm = rewards.create(  # the reward settings of configs/study_sim.yaml
        "global-rm", backbone=args.backbone, backbone_training="frozen", use_chat_template=True,
        max_prompt_tokens=80, max_response_tokens=24,
    )  # fmt: skip
    print(f"{len(texts)} texts of {len(prompts)} prompts", file=sys.stderr, flush=True)
    start = time.perf_counter()
    pooled = {"last": [], "mean": []}
    for i in range(0, len(texts), 64):
        part = texts[i : i + 64]
        hidden, valid = padded_states(rm, [p for p, _ in part], [r for _, r in part])
        for how in pooled:
            pooled[how].append(pool_states(hidden, valid, how).cpu().numpy())
    seconds = time.perf_counter() - start
    phi = truth.features([p for p, _ in texts], [r for _, r in texts])  # [N, d] standardized
    order = list(range(len(prompts)))
    random.Random(0).shuffle(order)
    fold_of = {prompts[j]: k % FOLDS for k, j in enumerate(order)}
    folds = np.array([fold_of[p] for p, _ in texts])
    row = {t: i for i, t in enumerate(texts)}
    query = [q for q in bench.query if q.prompt in fold_of]
    out = {}
    for how, blocks in pooled.items():
        x = np.concatenate(blocks).astype(np.float64)
        scored = {a: ridge_predictions(x, phi, folds, a) for a in ALPHAS}
        alpha = max(ALPHAS, key=lambda a: float(np.mean(r2(phi, scored[a]))))
        pred = scored[alpha]
        fit = r2(phi, pred)  # [d] held-out R^2 per attribute

        def margin(q, pred=pred):  # w_u . (phi-hat(chosen) - phi-hat(rejected))
            diff = pred[row[(q.prompt, q.chosen)]] - pred[row[(q.prompt, q.rejected)]]
            return float(diff @ truth.weights(q.user))

        probe = true_accuracy(margin, truth, query)
        z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)  # every text's features, z-scored
        pairwise = pairwise_probe(z, row, bench, truth)
        out[how] = {
            "pairwise": pairwise,
            "alpha": alpha,
            "r2": dict(zip(truth.attributes, np.round(fit, 4).tolist(), strict=True)),
            "r2_mean": round(float(np.mean(fit)), 4),
            "probe_true_rm_accuracy": probe["true_rm_accuracy"],
            "ci95": probe["ci95"],
            "query_pairs": probe["pairs"],
            "users": probe["users"],
        }
    report = {
        "benchmark": str(args.benchmark),
        "backbone": args.backbone,
        "texts": len(texts),
        "prompts": len(prompts),
        "hidden_size": int(rm.backbone.hidden_size),
        "folds": FOLDS,
        "feature_seconds": round(seconds, 1),
        "pooling": out,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
