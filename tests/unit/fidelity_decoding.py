"""Paper fidelity, part C (issue 12, items 5, 13, 15 and 16): ICL demonstrations as Eq. 7's
triples, ARGS in a regime where lambda matters, zero-shot greedy against ``transformers``'
``generate``, and the sampler against softmax(score / T).

The lead merges these into tests/unit/test_paper_fidelity.py.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from scipy import stats

import persalign.rewards as rewards
from persalign.decoding import DecodeSettings, GenerationRequest, Policy, create_decoder
from persalign.decoding import args as args_module
from persalign.decoding import base as base_module
from persalign.decoding.args import ArgsChooser, ArgsDecoder, ArgsSettings
from persalign.decoding.icl import icl_messages, icl_prompt_ids
from persalign.decoding.zero_shot import ZeroShotDecoder
from persalign.errors import ConfigError
from persalign.metrics import policy_accuracy as policy_metrics
from persalign.models import resolve_model_path
from persalign.runs.benchmark_builds import PreparedBenchmark
from persalign.runs.config import parse_config
from persalign.runs.plan import make_plan
from persalign.types import Preference

from ..reference import ArgsStep, naive_args_steps

# ------------------------------------------------------------------------------------ item 5


def support_and_query() -> tuple[dict[str, list[Preference]], list[Preference]]:
    """Two users; every chosen and rejected text is unique, so a rendering can be read back."""
    support, query = {}, []
    for user in ("ua", "ub"):
        support[user] = [
            Preference(
                f"{user}/s{i}",
                user,
                f"Prompt {user} {i} on owls",
                f"win {user}{i}",
                f"lose {user}{i}",
            )
            for i in range(4)
        ]
        query += [
            Preference(f"{user}/q{i}", user, f"Query {user} {i}", f"qwin {user}{i}", f"qlose {i}")
            for i in range(2)
        ]
    return support, query


def requests_of(prefs: Sequence[Preference]) -> list[GenerationRequest]:
    return [GenerationRequest(p.id, p.user, p.prompt) for p in prefs]


def chat_ids(policy: Policy, messages: list[dict[str, str]]) -> list[int]:
    """Plain HF: the chat template with the generation prompt, tokenized as is."""
    text = policy.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    return list(policy.tokenizer(text, add_special_tokens=False)["input_ids"])


def assert_pair_rendering(text: str, demos: Sequence[Preference], query: str) -> None:
    """Each demonstration shows its request, then the preferred, then the not preferred
    response, labelled; the query comes after all of them."""
    at = 0
    for demo in demos:
        for part in (
            demo.prompt,
            f"Preferred response:\n{demo.chosen}",
            f"Not preferred response:\n{demo.rejected}",
        ):
            found = text.find(part, at)
            assert found >= at, (part, text)
            at = found + len(part)
    assert text.find(query, at) > at and text.endswith(query)


@pytest.fixture(scope="module")
def icl_policy(tiny_lm: str) -> Policy:
    return Policy.load(tiny_lm, device="cpu")


def test_05_icl_demonstrations_are_preference_triples(icl_policy, monkeypatch, tmp_path):
    policy, (support, query) = icl_policy, support_and_query()
    requests = requests_of(query)

    # the default (the paper's reading): (x, y_w, y_l), labelled, for icl and icl-rag alike
    for name, extra in (("icl", {}), ("icl-rag", {"retrieval": "bm25"})):
        decoder = create_decoder(name, policy, support=support, shots=2, seed=3, **extra)
        assert decoder.settings.demonstrations == "pair"
        for request, built in zip(requests, decoder.build_all(requests), strict=True):
            demos = decoder.demonstrations(request)
            assert len(demos) == 2 and all(d.user == request.user for d in demos)
            messages = icl_messages(demos, request.prompt, "pair")
            assert len(messages) == 1  # prepended to the query prompt, in its user turn
            assert_pair_rendering(messages[0]["content"], demos, request.prompt)
            assert list(built.prompt_ids) == chat_ids(policy, messages)

    # the other reading, as an option: today's chosen-only turns, exactly (plain HF template)
    chosen = create_decoder(
        "icl", policy, support=support, shots=2, seed=3, demonstrations="chosen"
    )
    for request, built in zip(requests, chosen.build_all(requests), strict=True):
        turns = []
        for demo in chosen.demonstrations(request):
            turns += [
                {"role": "user", "content": demo.prompt},
                {"role": "assistant", "content": demo.chosen},
            ]
        assert list(built.prompt_ids) == chat_ids(
            policy, [*turns, {"role": "user", "content": request.prompt}]
        )
    with pytest.raises(ConfigError, match="demonstrations"):
        create_decoder("icl", policy, support=support, demonstrations="rejected")

    # both renderings fit the budget the same way: demonstrations dropped first (least relevant
    # first), counted, the query kept whole; the longer pair rendering drops more
    demos = support["ua"][:3]
    unbounded = {
        r: [len(icl_prompt_ids(policy.formatter, demos[d:], "Q?", 10**6, r)[0]) for d in range(4)]
        for r in ("pair", "chosen")
    }
    budget = unbounded["pair"][1] - 1  # pair: two of three dropped; chosen: none
    assert unbounded["chosen"][0] <= budget
    dropped_by = {}
    query_tail = chat_ids(policy, [{"role": "user", "content": "Q?"}])[-3:]  # Q ? <assistant>
    for rendering, lengths in unbounded.items():
        ids, dropped, cut = icl_prompt_ids(policy.formatter, demos, "Q?", budget, rendering)
        assert cut == 0 and len(ids) == lengths[dropped] <= budget
        assert dropped == 0 or lengths[dropped - 1] > budget  # no more dropped than needed
        kept = icl_prompt_ids(policy.formatter, demos[dropped:], "Q?", 10**6, rendering)[0]
        assert ids == kept and ids[-3:] == query_tail  # the most relevant kept, the query whole
        dropped_by[rendering] = dropped
    assert dropped_by == {"pair": 2, "chosen": 0}
    for rendering in ("pair", "chosen"):  # no demonstration left: exactly the zero-shot prompt
        ids, dropped, cut = icl_prompt_ids(
            policy.formatter, demos, "Q?", unbounded["pair"][3], rendering
        )
        assert (ids, dropped, cut) == (policy.formatter.prompt_ids("Q?"), 3, 0)
        counted = create_decoder(
            "icl", policy, support=support, shots=3, max_prompt_tokens=16, demonstrations=rendering
        )
        counted.build_all(requests)
        assert counted.dropped_demonstrations == 3 * len(requests)
        # the cell's demonstrations block: every request's draw, recounted from scratch (so a
        # resumed generation still reports all of them), the prompts left bare counted
        fit = counted.demonstration_fit(requests)
        assert (
            fit
            == counted.demonstration_fit(requests)
            == {
                "prompts": len(requests),
                "requested": 3 * len(requests),
                "shown": 0,
                "dropped": 3 * len(requests),
                "truncated_queries": 0,
                "prompts_without": len(requests),
                "cut_texts": 0,
                "max_prompt_tokens": 16,
                "max_text_tokens": None,
            }
        )
    roomy = create_decoder("icl", policy, support=support, shots=3, max_prompt_tokens=budget)
    fit = roomy.demonstration_fit(requests)
    drawn = sum(len(roomy.demonstrations(r)) for r in requests)
    assert fit["requested"] == drawn and fit["shown"] + fit["dropped"] == drawn
    assert fit["shown"] > 0 and fit["prompts_without"] < len(requests)
    # max_text_tokens: every request text (query and demonstrations) cut in the middle first
    long_support = {
        user: [replace(p, prompt=p.prompt + " filler" * 40) for p in prefs]
        for user, prefs in support.items()
    }
    long_query = [replace(r, prompt=r.prompt + " tail" * 40) for r in requests]
    short = create_decoder(
        "icl", policy, support=long_support, shots=1, max_text_tokens=12, demonstrations="pair"
    )
    built = short.build_all(long_query)
    assert short.cut_texts == 2 * len(requests)  # each query and its one demonstration
    for request, prompt in zip(long_query, built, strict=True):
        (demo,) = short.demonstrations(request)
        cut_demo = replace(demo, prompt=short.cut(demo.prompt))
        want = chat_ids(policy, icl_messages([cut_demo], short.cut(request.prompt), "pair"))
        assert list(prompt.prompt_ids) == want
        ids = policy.tokenizer(short.cut(request.prompt), add_special_tokens=False)["input_ids"]
        assert len(ids) <= 12 + 5  # and the cut mark, which the seam may merge or split
    # one token per character here: the first and the last 6 characters, joined by the mark
    assert short.cut("Query ua 0" + " tail" * 40) == "Query ... l tail"
    assert short.cut("Query ua 0") == "Query ua 0"  # within the limit: untouched
    whole = create_decoder("icl", policy, support=long_support, shots=1).build_all(long_query)
    assert all(len(a.prompt_ids) > len(b.prompt_ids) for a, b in zip(whole, built, strict=True))

    # the ICL scorer of policy accuracy (Eq. 7) scores from the prompts generation decodes from
    seen: list[list[list[int]]] = []
    real_parts = policy_metrics.preference_parts

    def spy(*args, **kwargs):
        seen.append([list(ids) for ids in kwargs["prompt_ids"][: len(query)]])
        return real_parts(*args, **kwargs)

    monkeypatch.setattr(policy_metrics, "preference_parts", spy)
    cases = [
        ("icl", {}),
        ("icl", {"demonstrations": "chosen"}),
        ("icl-rag", {"retrieval": "bm25"}),
        ("icl-rag", {"retrieval": "bm25", "demonstrations": "chosen"}),
    ]
    for name, settings in cases:
        policy_metrics.policy_accuracy(
            policy,
            query,
            scorer="icl",
            support=support,
            shots=2,
            seed=3,
            icl_decoder=name,
            icl_settings=settings,
            progress=False,
        )
        expect = create_decoder(name, policy, support=support, shots=2, seed=3, **settings)
        assert seen[-1] == [list(b.prompt_ids) for b in expect.build_all(requests)], (
            name,
            settings,
        )
    assert seen[0] != seen[1] and seen[2] != seen[3]  # the rendering reaches the scorer

    # the run config: baselines.demonstrations reaches every ICL and ICL-RAG cell
    raw = {
        "name": "t",
        "seeds": [0],
        "benchmarks": {"toy": {"path": "bench"}},
        "reward": {"backbone": "some/backbone"},
        "methods": {"lore": None},
        "policies": {"small": {"spec": "some/policy", "params_m": 500}},
        "baselines": {"icl": [2], "icl_rag": [4]},
    }
    bench = {"toy": PreparedBenchmark("toy", Path("/b"), "h")}
    for overrides, expect in (([], "pair"), (["baselines.demonstrations=chosen"], "chosen")):
        jobs = make_plan(parse_config(raw, overrides=overrides, base_dir=tmp_path), bench)
        icl_cells = [j.spec for j in jobs if j.kind == "cell" and j.spec.method.startswith("icl")]
        assert len(icl_cells) == 2
        assert all(s.decoder_settings["demonstrations"] == expect for s in icl_cells)
    with pytest.raises(ConfigError, match="demonstrations"):
        parse_config(raw, overrides=["baselines.demonstrations=rejected"], base_dir=tmp_path)


@pytest.mark.parametrize("rendering", ["chosen", "pair"])
def test_05_run_cells_give_the_icl_scorer_the_rendering(tmp_path, tiny_lm, monkeypatch, rendering):
    """A run's ICL cells score policy accuracy with the demonstrations their decoder renders."""
    from persalign.runs.runner import run_experiment

    from .rewards_synthetic import write_two_group_benchmark

    seen: list[tuple[str, dict]] = []
    real = policy_metrics.policy_accuracy

    def spy(policy, prefs, **kwargs):
        if kwargs.get("scorer") == "icl":
            seen.append((kwargs["icl_decoder"], dict(kwargs["icl_settings"])))
        return real(policy, prefs, **kwargs)

    monkeypatch.setattr(policy_metrics, "policy_accuracy", spy)
    bench = write_two_group_benchmark(tmp_path / "bench")
    raw = {
        "name": "icl",
        "threads": 1,
        "benchmarks": {"toy": {"path": str(bench)}},
        "policies": {"tiny": {"spec": tiny_lm, "params_m": 0.1}},
        "baselines": {
            "zero_shot": False,
            "icl": [1],
            "icl_rag": [1],
            "retrieval": "bm25",
            "demonstrations": rendering,
        },
        "decoding": {"generate": False},
        "lambda": {"grid": [1.0]},
        "metrics": {"generation": {"bertscore_model": None}},
    }
    run_experiment(parse_config(raw), tmp_path / "runs")
    assert sorted(decoder for decoder, _ in seen) == ["icl", "icl-rag"]
    assert all(settings["demonstrations"] == rendering for _, settings in seen)


# ------------------------------------------------------------------------------------ item 13

ARGS_PROMPTS = [
    "Say about cat sun",
    "Title: a study of cats on mats",
    "Hi",
    "Write a short line about the dog",
]
ARGS_USERS = ["u1", "u2", "u1", "u3"]
LAMS = (0.0, 1.0, 5.0)
K, STEPS = 5, 8
PEAK = 20.0  # the policy's logits x 20: top-1 vs top-2 gaps of a nat or more


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: these tests run thousands of tiny forwards, which a second thread only
    slows down (badly, on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def peaked_policy(tiny_lm_other: str) -> Policy:
    """A policy with a peaked next-token distribution (its output layer scaled up)."""
    policy = Policy.load(tiny_lm_other, device="cpu")
    with torch.no_grad():
        policy.model.lm_head.weight.mul_(PEAK)
    return policy


def hand_set_reward_model(method: str, backbone: str):
    """An untrained reward model of ``method`` whose rewards are set to the policy's scale, so
    that at lambda = 1 the policy decides some steps and the reward others."""
    users = torch.Generator().manual_seed(0)
    if method == "global-rm":
        rm = rewards.create(method, backbone=backbone, device="cpu", seed=0)
        with torch.no_grad():
            rm.head.net[-1].weight.mul_(5.0)
    elif method == "lore":
        rm = rewards.create(method, backbone=backbone, device="cpu", seed=0, basis_scale=0.2)
        rm.set_users(["u1", "u2", "u3"], 12 * torch.randn(3, rm.user_dim, generator=users))
    elif method == "genarm":  # token reward 0.5 * log p of a peaked reward LM
        rm = rewards.create(method, backbone=backbone, device="cpu", seed=0, reward_beta=0.5)
        with torch.no_grad():
            rm.backbone.lm_head.weight.mul_(10.0)
    elif method == "p-dpo":  # beta * log(pi_theta / pi_ref): the users' soft tokens differ
        rm = rewards.create(method, backbone=backbone, device="cpu", seed=0, beta=20.0)
        rm.set_users(["u1", "u2", "u3"], 3 * torch.randn(3, rm.user_dim, generator=users))
    else:
        raise ValueError(method)
    return rm.eval()


def args_requests() -> list[GenerationRequest]:
    pairs = zip(ARGS_PROMPTS, ARGS_USERS, strict=True)
    return [GenerationRequest(f"q{i}", user, prompt) for i, (prompt, user) in enumerate(pairs)]


def check_fast_args(policy, rm, naive: dict[float, list[list[int]]]) -> None:
    """Fast ARGS (cached, batched) gives the naive tokens at every lambda, batch 1 and 4."""
    for lam, batch in itertools.product(LAMS, (1, 4)):
        settings = ArgsSettings(lam=lam, k=K, max_new_tokens=STEPS, batch_size=batch)
        fast = ArgsDecoder(policy, rm, settings).generate(args_requests(), progress=False)
        assert [g.tokens for g in fast] == naive[lam], (lam, batch)


def scores_are_rewards(self, logits):
    """A broken ARGS step: ``scores = rewards``."""
    _, top_ids = self.candidates(logits)
    rewards_k = self.rm.step_rewards(self.state, top_ids)
    choice = base_module.pick(rewards_k, self.settings, self.generator)
    self.rm.commit(self.state, choice)
    return top_ids.gather(1, choice[:, None])[:, 0]


def scores_are_logp(self, logits):
    """A broken ARGS step: ``scores = logp``."""
    top_logp, top_ids = self.candidates(logits)
    self.rm.step_rewards(self.state, top_ids)
    choice = base_module.pick(top_logp, self.settings, self.generator)
    self.rm.commit(self.state, choice)
    return top_ids.gather(1, choice[:, None])[:, 0]


@pytest.mark.parametrize("method", ["global-rm", "lore", "genarm", "p-dpo"])
def test_13_args_fast_equals_naive_where_lambda_matters(
    peaked_policy, tiny_lm, method, monkeypatch, one_thread
):
    policy, rm = peaked_policy, hand_set_reward_model(method, tiny_lm)
    traces: dict[float, list[tuple[list[int], list[ArgsStep]]]] = {
        lam: [
            naive_args_steps(policy, rm, r.prompt, r.user, K, lam, STEPS) for r in args_requests()
        ]
        for lam in LAMS
    }
    naive = {lam: [tokens for tokens, _ in rows] for lam, rows in traces.items()}

    # the regime: every lambda of {0, 1, 5} writes something else ...
    for a, b in itertools.combinations(LAMS, 2):
        assert naive[a] != naive[b], (method, a, b)
    # ... and at lambda = 1 the policy term decides some steps and the reward term others
    decided = Counter(step.decided_by() for _, steps in traces[1.0] for step in steps)
    assert decided["policy"] >= 2 and decided["reward"] >= 2, (method, decided)
    assert all(s.decided_by() in ("policy", "both") for _, st in traces[0.0] for s in st)

    check_fast_args(policy, rm, naive)

    # the check catches a broken score: rewards alone, or the policy alone
    for broken in (scores_are_rewards, scores_are_logp):
        with monkeypatch.context() as patch:
            patch.setattr(ArgsChooser, "choose", broken)
            with pytest.raises(AssertionError):
                check_fast_args(policy, rm, naive)


# ------------------------------------------------------------------------------------ item 15

ZERO_SHOT_PROMPTS = [
    "What is the capital of France?",
    "Write a title for a paper about parsing low-resource languages.",
    "Name three colours.",
]


def hf_greedy(model, tokenizer, prompt: str, steps: int) -> list[int]:
    """Plain ``transformers``: the chat template, then ``generate`` (greedy) until an eos id of
    the tokenizer or of the generation config, or ``steps`` tokens; the eos is not returned."""
    messages = [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # [1, P]
    eos = model.generation_config.eos_token_id
    eos = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=steps,
            do_sample=False,
            num_beams=1,
            eos_token_id=sorted(eos),
            pad_token_id=tokenizer.pad_token_id,
            top_k=None,
            top_p=None,
            temperature=None,
        )
    tokens = out[0, ids.shape[1] :].tolist()
    return tokens[:-1] if tokens and tokens[-1] in eos else tokens


def stop_rule(tokenizer, tokens: list[int], stops: Sequence[str]) -> tuple[list[int], str]:
    """The response ends after the first token whose text holds a stop string with text before
    it (a leading stop string does not end it); (tokens, text before the stop string)."""
    for i in range(len(tokens)):
        text = tokenizer.decode(tokens[: i + 1], skip_special_tokens=True)
        for stop in stops:
            if stop in text and text[: text.find(stop)].strip():
                return tokens[: i + 1], text[: text.find(stop)].strip()
    return tokens, tokenizer.decode(tokens, skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def smollm():
    """The bundled SmolLM2-135M-Instruct as a Policy (float32, CPU) and its plain HF tokenizer."""
    from transformers import AutoTokenizer

    from ..integration.test_bundled_models import SMOLLM, _require_package

    _require_package("smollm2-135m-instruct")
    policy = Policy.load(SMOLLM, device="cpu", dtype="float32")
    return policy, AutoTokenizer.from_pretrained(resolve_model_path(SMOLLM))


@pytest.mark.integration
def test_15_zero_shot_greedy_equals_transformers_generate(smollm, one_thread):
    policy, tokenizer = smollm
    steps = 24
    greedy = [hf_greedy(policy.model, tokenizer, p, steps) for p in ZERO_SHOT_PROMPTS]
    requests = [GenerationRequest(f"q{i}", "u", p) for i, p in enumerate(ZERO_SHOT_PROMPTS)]
    for stops, batch in itertools.product([(), ("\n",)], (1, 3)):
        expect = [stop_rule(tokenizer, tokens, stops) for tokens in greedy]
        settings = DecodeSettings(max_new_tokens=steps, stop=stops, batch_size=batch)
        got = ZeroShotDecoder(policy, settings=settings).generate(requests, progress=False)
        assert [(g.tokens, g.text) for g in got] == expect, (stops, batch)
        if stops:  # every way to end is exercised: eos, the stop string, the length cap
            assert {g.finish_reason for g in got} == {"eos", "stop", "length"}


# ------------------------------------------------------------------------------------ item 16

DRAWS = 4000


def chi_square_p(draws: Sequence[int], probs: dict[int, float]) -> float:
    """p-value of the draws under ``probs`` (token -> probability); tokens whose expected count
    is under 5 share one bin, and a draw outside ``probs`` makes it 0."""
    counts = Counter(draws)
    if set(counts) - set(probs):
        return 0.0
    big = [t for t, p in probs.items() if p * len(draws) >= 5]
    rest = [t for t in probs if t not in big]
    observed = [counts[t] for t in big]
    expected = [probs[t] * len(draws) for t in big]
    if rest:
        observed.append(sum(counts[t] for t in rest))
        expected.append(sum(probs[t] for t in rest) * len(draws))
    assert len(observed) >= 3, "too few bins to tell a sampler from argmax"
    scale = sum(observed) / sum(expected)  # float rounding only
    return float(stats.chisquare(observed, [e * scale for e in expected]).pvalue)


def greedy_pick(scores, settings, generator):
    """A broken sampler: always the argmax."""
    return scores.argmax(dim=-1)


def cold_pick(scores, settings, generator):
    """A broken sampler: ignores the temperature."""
    probs = torch.softmax(scores, dim=-1).cpu()
    return torch.multinomial(probs, 1, generator=generator)[:, 0].to(scores.device)


def first_tokens(decoder, request: GenerationRequest, eos: int) -> list[int]:
    """The first token of DRAWS independent rows of ``request`` (eos: the response ended)."""
    out = decoder.generate([request] * DRAWS, progress=False)
    return [g.tokens[0] if g.tokens else eos for g in out]


def policy_probs(policy: Policy, prompt: str, temperature: float) -> dict[int, float]:
    """softmax(logits / T) of the first response token, from one plain forward pass."""
    ids = torch.tensor([policy.formatter.prompt_ids(prompt)])
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0, -1].double()  # [V]
    return dict(enumerate(torch.softmax(logits / temperature, -1).tolist()))


def args_probs(policy, rm, request, lam: float, temperature: float) -> dict[int, float]:
    """softmax((logp + lam * r) / T) over the policy's top-k, from the naive reference."""
    _, (step,) = naive_args_steps(policy, rm, request.prompt, request.user, K, lam, 1)
    scores = torch.tensor(step.logp, dtype=torch.float64) + lam * torch.tensor(
        step.rewards, dtype=torch.float64
    )
    return dict(zip(step.ids, torch.softmax(scores / temperature, -1).tolist(), strict=True))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_16_sampling_matches_softmax_of_scores_over_temperature(
    peaked_policy, tiny_lm, temperature, monkeypatch, one_thread
):
    policy = peaked_policy
    (eos,) = policy.eos_ids()
    rm = hand_set_reward_model("lore", tiny_lm)
    request = GenerationRequest("q", "u2", ARGS_PROMPTS[0])
    lam = 1.0
    common = dict(mode="sample", temperature=temperature, max_new_tokens=1, batch_size=DRAWS)

    def sampled() -> dict[str, tuple[list[int], dict[int, float]]]:
        zero_shot = ZeroShotDecoder(policy, settings=DecodeSettings(**common, seed=1))
        args = ArgsDecoder(policy, rm, ArgsSettings(**common, seed=2, lam=lam, k=K))
        return {
            "policy": (
                first_tokens(zero_shot, request, eos),
                policy_probs(policy, request.prompt, temperature),
            ),
            "args": (
                first_tokens(args, request, eos),
                args_probs(policy, rm, request, lam, temperature),
            ),
        }

    for chooser, (draws, probs) in sampled().items():
        assert chi_square_p(draws, probs) > 1e-3, (chooser, temperature)
        assert len(set(draws)) >= 3  # really sampled

    broken = [greedy_pick] + ([cold_pick] if temperature != 1.0 else [])
    for pick in broken:
        with monkeypatch.context() as patch:
            patch.setattr(base_module, "pick", pick)
            patch.setattr(args_module, "pick", pick)
            for chooser, (draws, probs) in sampled().items():
                assert chi_square_p(draws, probs) < 1e-6, (chooser, pick.__name__)
