"""persalign data build sim: attributes, users, Bradley-Terry labels, true_reward.json,
byte-identical rebuilds and one-line errors before anything is written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from persalign.data import BUILDERS, load_benchmark
from persalign.data.attributes import ATTRIBUTES
from persalign.data.sim import SimOptions, label
from persalign.data.true_reward import TrueReward
from persalign.errors import ConfigError

from .sim_source import write_source
from .test_cli import run

# attribute -> (prompt, response, expected): worked by hand
EXAMPLES = {
    "length": ("x", "Attention Is All You Need", 5.0),
    "colon": ("x", "BERT: Pre-training of Transformers", 1.0),
    "digits": ("x", "I lost 20 pounds in 3.5 months", 2.0),
    "question": ("x", "Should I move out?", 1.0),
    "first_person": ("x", "I think my cat hates me", 0.5),
    "extractive": ("My cat ate my homework", "Cat ate the homework", 0.75),
    "acronyms": ("x", "BERT and GPT-4 for NLP in Rome", 3.0),
    "word_length": ("x", "ab abcd", 3.0),
    "hype": ("x", "A novel, powerful and simple model", 3.0),
}


def test_at_least_eight_documented_attributes_each_as_worked_by_hand():
    assert len(ATTRIBUTES) >= 8 and set(EXAMPLES) <= set(ATTRIBUTES.names())
    for name, (prompt, response, expected) in EXAMPLES.items():
        fn = ATTRIBUTES.get(name)
        assert fn.__doc__ and fn.__module__.endswith(f"attributes.{name}")  # one file each
        assert fn(prompt, response) == pytest.approx(expected), name
        assert fn(prompt, "") == 0.0, name
    assert ATTRIBUTES.get("colon")("x", "Plain title") == 0.0


def build(src: Path, out: Path, **options) -> Path:
    defaults = {"source": str(src), "users": 12, "groups": 3, "items_per_user": 6, "seed": 1}
    BUILDERS.get("sim")(SimOptions(**{**defaults, **options}), out)
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_inputs_and_seed_give_a_byte_identical_folder(tmp_path: Path):
    src = write_source(tmp_path / "src")
    a = build(src, tmp_path / "a", noise=1.0)
    b = build(src, tmp_path / "b", noise=1.0)
    assert files(a) == files(b) and "true_reward.json" in files(a)
    c = build(src, tmp_path / "c", noise=1.0, seed=2)
    assert files(c)["train.jsonl"] != files(a)["train.jsonl"]


def naive_reward(truth: dict, prompt: str, response: str, user: str) -> float:
    """r_u recomputed from the JSON alone, attribute by attribute."""
    total = 0.0
    for j, name in enumerate(truth["attributes"]):
        s = truth["standardization"][name]
        phi = (ATTRIBUTES.get(name)(prompt, response) - s["mean"]) / s["std"]
        total += truth["users"][user]["weights"][j] * phi
    return total


def test_true_reward_json_recomputes_r_u_and_noise_free_labels_follow_it(tmp_path: Path):
    src = write_source(tmp_path / "src")
    out = build(src, tmp_path / "sim", noise=0.0, attributes=("length", "colon", "hype"))
    truth = json.loads((out / "true_reward.json").read_text())
    assert truth["attributes"] == ["length", "colon", "hype"] and truth["noise"] == 0.0
    assert len(truth["users"]) == 12 and len(truth["group_weights"]) == 3
    bench = load_benchmark(out)
    assert isinstance(bench.true_reward, TrueReward)
    prefs = [*bench.train, *bench.support, *bench.query]
    assert len(prefs) == 12 * 6 and len(bench.adapt_users()) == round(0.2 * 12)
    for p in prefs:
        rc, rr = (naive_reward(truth, p.prompt, y, p.user) for y in (p.chosen, p.rejected))
        got = bench.true_reward.rewards([p.prompt] * 2, [p.chosen, p.rejected], [p.user] * 2)
        assert got == pytest.approx([rc, rr], abs=1e-9)
        assert rc >= rr  # BETA 0: the higher true reward is chosen
    # each query prompt's completion is its response with the highest r_u (naively: all four)
    pool: dict[str, set[str]] = {}
    for p in load_benchmark(src).train + load_benchmark(src).support + load_benchmark(src).query:
        pool.setdefault(p.prompt, set()).update((p.chosen, p.rejected))
    for c in bench.completions:
        best = max(naive_reward(truth, c.prompt, y, c.user) for y in pool[c.prompt])
        assert naive_reward(truth, c.prompt, c.reference, c.user) == pytest.approx(best)
    assert {c.id for c in bench.completions} == {q.id for q in bench.query}


def test_users_of_a_group_share_its_centre_without_spread(tmp_path: Path):
    out = build(write_source(tmp_path / "src"), tmp_path / "sim", user_spread=0.0, groups=2)
    truth = json.loads((out / "true_reward.json").read_text())
    centres = np.array(truth["group_weights"])
    for user in truth["users"].values():
        assert np.allclose(user["weights"], centres[user["group"]])
    sizes = [sum(u["group"] == g for u in truth["users"].values()) for g in range(2)]
    assert sizes == [6, 6]


def test_shared_taste_moves_every_centre_by_one_common_vector(tmp_path: Path):
    source = write_source(tmp_path / "src")
    plain = build(source, tmp_path / "plain", groups=3)
    shared = build(source, tmp_path / "shared", groups=3, shared_taste=0.64)
    one = build(source, tmp_path / "one", groups=3, shared_taste=1.0, user_spread=0.0)
    independent = np.array(json.loads((plain / "true_reward.json").read_text())["group_weights"])
    truth = json.loads((shared / "true_reward.json").read_text())
    centres = np.array(truth["group_weights"])  # [K, d]
    common = centres - 0.6 * independent  # sqrt(1 - s) = 0.6: each row is sqrt(s) * m
    assert np.allclose(common, common[0]) and not np.allclose(common[0], 0)
    assert truth["shared_taste"] == 0.64
    assert "shared_taste" not in json.loads((plain / "true_reward.json").read_text())
    weights = [
        u["weights"] for u in json.loads((one / "true_reward.json").read_text())["users"].values()
    ]
    assert np.allclose(weights, weights[0])  # s = 1 and no spread: one taste for everyone
    assert np.allclose(weights[0], common[0] / 0.8)  # m itself (sqrt(s) = 0.8 above)


def test_bradley_terry_label_matches_the_logistic_probability():
    for ra, rb, beta in [(1.0, 0.0, 1.0), (0.0, 2.0, 0.5), (3.0, 3.0, 2.0), (50.0, -50.0, 0.1)]:
        p = 1 / (1 + math.exp(-(ra - rb) / beta))
        for draw in np.linspace(0, 0.999, 37):
            assert label(ra, rb, beta, float(draw)) == (draw < p)
    assert label(1.0, 0.0, 0.0, 0.99) and not label(0.0, 1.0, 0.0, 0.0)
    assert label(1.0, 1.0, 0.0, 0.4) and not label(1.0, 1.0, 0.0, 0.6)  # a tie: the coin


def test_more_noise_gives_more_labels_against_the_true_reward(tmp_path: Path):
    src = write_source(tmp_path / "src")

    def against(noise: float) -> float:
        bench = load_benchmark(build(src, tmp_path / f"n{noise}", noise=noise, users=40))
        prefs = [*bench.train, *bench.support, *bench.query]
        return sum(p.meta["true_margin"] < 0 for p in prefs) / len(prefs)

    assert against(0.0) == 0.0
    assert 0.25 < against(100.0) < 0.75


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--attributes", "length,lenght"], "unknown attribute 'lenght'; did you mean 'length'"),
        (["--users", "3", "--groups", "5"], "--groups 5 is more than --users 3"),
        (["--noise", "-1"], "noise"),
    ],
)
def test_bad_input_is_a_one_line_error_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
):
    src = write_source(tmp_path / "src")
    out = tmp_path / "sim"
    code, _, err = run(
        ["data", "build", "sim", "--from", str(src), "--out", str(out), *extra], capsys
    )
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_source_without_pairs_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    src = write_source(tmp_path / "src", same=True)
    out = tmp_path / "sim"
    code, _, err = run(["data", "build", "sim", "--from", str(src), "--out", str(out)], capsys)
    assert code != 0 and "no prompt has two different responses" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    with pytest.raises(ConfigError, match="--from"):
        BUILDERS.get("sim")(SimOptions(), tmp_path / "x")


def test_cli_builds_the_same_folder_as_the_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    src = write_source(tmp_path / "src")
    argv = ["data", "build", "sim", "--from", str(src), "--users", "12", "--groups", "3",
            "--noise", "0.5", "--attributes", "length,question", "--items-per-user", "6",
            "--seed", "1", "--out", str(tmp_path / "cli")]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 0, err
    api = build(src, tmp_path / "api", noise=0.5, attributes=("length", "question"))
    # manifests name their --from path identically; everything else is byte-identical
    assert files(tmp_path / "cli") == files(api)
    code, _, err = run(
        ["data", "build", "tldr", "--users", "3", "--out", str(tmp_path / "t")], capsys
    )
    assert code != 0 and "No such option" in err and "--users" in err  # not a tldr option
