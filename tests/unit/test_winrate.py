"""Win rate (Table 5): a stub reward model with known rewards, and a tiny real one via the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from persalign.data.benchmark_folder import write_benchmark
from persalign.errors import ConfigError
from persalign.metrics.winrate import win_rate
from persalign.types import Preference

from .test_cli import run


class StubRM:
    """Reward = a fixed number per response text; records what it was asked."""

    def __init__(self, rewards: dict[str, float]):
        self.rewards = rewards
        self.calls: list[tuple[list[str], list[str], list[str]]] = []

    def sequence_rewards(self, prompts, responses, users):
        self.calls.append((list(prompts), list(responses), list(users)))
        return torch.tensor([self.rewards[r] for r in responses])


def gen(user: str, gid: str, text: str) -> dict[str, str]:
    return {"user": user, "id": gid, "text": text}


def test_win_rate_pooled_and_per_user_with_ties_and_unscored_pairs():
    rm = StubRM({"good": 2.0, "bad": -1.0, "meh": 0.5, "also meh": 0.5, "same": 0.0})
    rgd = [
        gen("a", "1", "good"),  # win
        gen("a", "2", "bad"),  # loss
        gen("a", "3", "meh"),  # tie: equal rewards
        gen("a", "4", "same"),  # tie: identical texts
        gen("b", "1", "good"),  # win
        gen("b", "2", "good"),  # no zero-shot partner
        gen("b", "3", "good"),  # no prompt
        gen("b", "4", ""),  # empty: not scorable
    ]
    zero = [
        gen("a", "1", "meh"),
        gen("a", "2", "meh"),
        gen("a", "3", "also meh"),
        gen("a", "4", "same"),
        gen("b", "1", "bad"),
        gen("b", "3", "bad"),
        gen("b", "4", "meh"),
        gen("c", "1", "meh"),  # no RGD partner
    ]
    prompts = {("a", str(i)): f"prompt a{i}" for i in range(1, 5)}
    prompts.update({("b", "1"): "prompt b1", ("b", "2"): "prompt b2", "4": "prompt by id"})
    result = win_rate(rm, rgd, zero, prompts, ties="half")
    # a: 1 win + 2 ties of 4 -> (1 + 1) / 4 = 0.5; b: 1 of 1 -> 1.0; mean over users 0.75;
    # pooled: (2 wins + 2 ties / 2) of 5 = 0.6
    assert result["per_user"] == {"a": 0.5, "b": 1.0}
    assert result["rate"] == 0.6 and result["per_user_mean"] == 0.75
    assert result["tie_weight"] == 0.5 and "mean" not in result and "pooled" not in result
    assert (result["wins"], result["ties"], result["losses"], result["n"]) == (2, 2, 1, 5)
    assert result["tie_rule"] == "ties count half"
    strict = win_rate(rm, rgd, zero, prompts)  # the default, the paper's: a tie is no win
    assert strict["per_user"] == {"a": 0.25, "b": 1.0}  # 2 of 5
    assert (strict["rate"], strict["per_user_mean"], strict["tie_weight"]) == (0.4, 0.625, 0.0)
    assert strict["tie_rule"] == "ties lose"
    with pytest.raises(ConfigError, match="ties must be one of loss, half"):
        win_rate(rm, rgd, zero, prompts, ties="win")
    assert result["tie_rate"] == {"a": 0.5, "b": 0.0}
    assert (result["unpaired_rgd"], result["unpaired_zero_shot"]) == (1, 1)
    assert (result["no_prompt"], result["empty"]) == (1, 1)
    # one batched call: the RGD texts then the zero-shot texts, each with its own prompt and user
    (prompts_seen, responses, users), *rest = rm.calls
    assert len(rest) == 1 and rest[0] == rm.calls[0]  # the strict call scored the same pairs
    assert responses == [
        "good",
        "bad",
        "meh",
        "same",
        "good",
        "meh",
        "meh",
        "also meh",
        "same",
        "bad",
    ]
    assert prompts_seen[4] == "prompt b1" and users == ["a"] * 4 + ["b"] + ["a"] * 4 + ["b"]


def test_win_rate_edge_cases():
    rm = StubRM({"x": 1.0})
    empty = win_rate(rm, [], [], {})
    assert math.isnan(empty["rate"]) and math.isnan(empty["per_user_mean"])
    assert empty["n"] == 0 and not rm.calls
    with pytest.raises(ConfigError, match="two RGD generations for user 'a', id '1'"):
        win_rate(rm, [gen("a", "1", "x")] * 2, [], {})
    with pytest.raises(ConfigError, match="needs user, id and text"):
        win_rate(rm, [], [{"user": "a", "text": "x"}], {})


def _benchmark(path: Path) -> Path:
    def pref(user: str, i: int) -> Preference:
        return Preference(f"{user}/{i}", user, f"Say something {i}", "yes alpha", "no omega")

    write_benchmark(
        path,
        train=[pref("t", i) for i in range(3)],
        support=[pref("a", 0), pref("b", 0)],
        query=[pref("a", 1), pref("a", 2), pref("b", 1)],
        manifest={"name": "toy"},
    )
    return path


def test_evaluate_winrate_cli_with_a_tiny_reward_model(tiny_lm, tmp_path, capsys):
    from persalign.cli import app
    from persalign.rewards import create, load

    bench = _benchmark(tmp_path / "bench")
    create("global-rm", backbone=tiny_lm, device="cpu", seed=0).save(tmp_path / "rm")
    rgd, zero = tmp_path / "rgd.jsonl", tmp_path / "zero.jsonl"
    rgd_rows = [gen("a", "a/1", "cat alpha"), gen("a", "a/2", "dog"), gen("b", "b/1", "sun")]
    zero_rows = [gen("a", "a/1", "cat omega"), gen("a", "a/2", "dog"), gen("b", "b/1", "moon")]
    rgd.write_text("".join(json.dumps(r) + "\n" for r in rgd_rows))
    zero.write_text("".join(json.dumps(r) + "\n" for r in zero_rows))
    argv = ["evaluate", "winrate", "--reward", str(tmp_path / "rm"), "--rgd", str(rgd)]
    argv += ["--zero-shot", str(zero), "--benchmark", str(bench)]
    result = CliRunner().invoke(app, [*argv, "--json", "--ties", "half"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    # the expected answer, from the same reward model scoring each pair on its own
    rm = load(tmp_path / "rm")
    wins: dict[str, float] = {}
    for (r, z), prompt in zip(
        [(rgd_rows[0], zero_rows[0]), (rgd_rows[2], zero_rows[2])],
        ["Say something 1", "Say something 1"],
        strict=True,
    ):
        pair = rm.sequence_rewards([prompt, prompt], [r["text"], z["text"]], [r["user"]] * 2)
        assert pair[0] != pair[1]
        wins[r["user"]] = float(pair[0] > pair[1])
    # a/2: identical texts, a tie, half a win
    assert got["per_user"] == {"a": (wins["a"] + 0.5) / 2, "b": wins["b"]}
    assert got["ties"] == 1 and got["n"] == 3 and got["tie_weight"] == 0.5
    assert got["rate"] == pytest.approx((wins["a"] + 0.5 + wins["b"]) / 3)
    assert got["per_user_mean"] == pytest.approx(((wins["a"] + 0.5) / 2 + wins["b"]) / 2)
    strict = CliRunner().invoke(app, [*argv, "--json"])  # the default: ties lose
    assert strict.exit_code == 0, strict.output
    assert json.loads(strict.stdout)["rate"] == pytest.approx((wins["a"] + wins["b"]) / 3)
    plain = CliRunner().invoke(app, argv)
    text = " ".join(plain.stdout.split())  # rich wraps
    assert plain.exit_code == 0 and "1 ties" in text and "ties lose: a tie counts as 0" in text
    # a missing file is one clear error
    code, _, err = run([*argv[:5], str(tmp_path / "nope.jsonl"), *argv[6:]], capsys)
    assert code == 2 and "nope.jsonl" in err


def test_the_cell_metric_follows_metrics_win_rate_ties():
    """metrics.win_rate.ties reaches the cell metric (default: ties lose, the paper's); its report
    columns read rate and the mean."""
    from persalign.metrics.base import CellContext, ZeroShot
    from persalign.metrics.winrate import WinRate
    from persalign.types import Benchmark

    query = tuple(Preference(f"a/{i}", "a", f"prompt {i}", "c", "r") for i in range(3))
    rgd = [gen("a", "a/0", "good"), gen("a", "a/1", "meh"), gen("a", "a/2", "bad")]
    zero = [gen("a", "a/0", "meh"), gen("a", "a/1", "also meh"), gen("a", "a/2", "meh")]
    rm = StubRM({"good": 1.0, "meh": 0.0, "also meh": 0.0, "bad": -1.0})  # win, tie, loss
    rates = {}
    for ties in ("half", "loss", None):
        ctx = CellContext(
            kind="method", method="lore", decoder="args", seed=0,
            settings={} if ties is None else {"win_rate": {"ties": ties}},
            benchmark=Benchmark("toy", (), (), query), reward_model=rm,  # type: ignore[arg-type]
            generations=rgd, zero_shot=ZeroShot({}, zero),
        )  # fmt: skip
        metric = WinRate(ctx.options("win_rate"))
        assert metric.applies(ctx)
        rates[ties] = metric.compute(ctx)["rate"]
    want = {"half": pytest.approx(1.5 / 3), "loss": pytest.approx(1 / 3)}
    assert rates == {**want, None: want["loss"]}  # the default counts a tie as a loss
    assert [c.path for c in WinRate.columns] == [
        ("win_rate", "rate"),
        ("win_rate", "per_user_mean"),
    ]
