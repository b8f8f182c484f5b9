"""The oracle: simulated users' known reward r_u itself, the ceiling of reward-guided decoding.

    rm = persalign.rewards.create("oracle", backbone="bundled:smollm2-135m-instruct")
    rm.use_benchmark(load_benchmark("out/sim"))     # a sim benchmark: bench.true_reward
    rm.fit(bench.train); rm.adapt("sim-042", support)       # no training: users are looked up
    rm.sequence_rewards(prompts, texts, users)      # r_u(x, y), exactly
    rm.prefix_rewards(prompts, texts, users)        # r_u(x, decode(y_<=t)) for every t

Only on a benchmark of simulated users (``persalign data build sim``; docs/simulated-users.md):
anywhere else ``use_benchmark`` (and any scoring before it) is a one-line ConfigError. It trains
nothing and saves no weight; ``adapt`` checks the user is simulated and records it. Prefix
rewards decode the response tokens up to t with the backbone's tokenizer (no model is loaded:
the backbone only names the tokenizer, which must be the policy's for ARGS) and score the text.
Under ARGS each candidate token's reward is r_u of the decoded prefix plus that token, so the
oracle's row is what reward-guided decoding reaches with a perfect reward at the same lambda:
the ceiling row of every table. Prompts are recovered from their token ids by rendering the
benchmark's own prompts (so the prompt-dependent attributes see the raw prompt); an unknown
prompt is decoded from its ids instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from persalign.errors import ConfigError
from persalign.models import load_tokenizer
from persalign.models.encoding import PromptFormatter
from persalign.rewards.base import PrefixRewards, RewardModel, register_method
from persalign.rewards.config import RewardConfig
from persalign.rewards.engine.prefix_scoring import same_length
from persalign.types import Benchmark, Preference, TrueRewardLike


class _NoBackbone(nn.Module):
    """Stands where a backbone would: the oracle runs no model (CPU, no parameters)."""

    device = torch.device("cpu")


@dataclass
class OracleState:
    """ARGS state: each row's prompt, user and response tokens so far, and the last candidates."""

    prompts: list[str]
    users: list[str]
    tokens: list[list[int]]
    candidates: torch.Tensor | None = None  # [B, k]
    extra: dict[str, Any] = field(default_factory=dict)

    def select(self, rows: torch.Tensor) -> None:
        keep = rows.tolist()
        self.prompts = [self.prompts[i] for i in keep]
        self.users = [self.users[i] for i in keep]
        self.tokens = [self.tokens[i] for i in keep]
        self.candidates = None if self.candidates is None else self.candidates[rows]


@register_method("oracle", summary="Simulated users' true reward r_u itself (sim benchmarks only)")
class Oracle(RewardModel):
    """r_u(x, y) = w_u . phi(x, y) from the benchmark's true_reward.json; no training."""

    personalized = True
    shares_prompt = False
    pair_eval_mode = None
    reads_hidden_states = False  # r_u of decoded text: no backbone, nothing to freeze

    @classmethod
    def frozen_problem(cls) -> str | None:
        return None  # no backbone is trained: any backbone_training is fine

    def __init__(self, config: RewardConfig, backbone: Any = None, tokenizer: Any = None):
        nn.Module.__init__(self)
        self.config = config
        tokenizer = tokenizer or load_tokenizer(
            config.backbone, trust_remote_code=config.trust_remote_code
        )
        self.formatter = PromptFormatter(
            tokenizer,
            use_chat_template=config.use_chat_template,
            max_prompt_tokens=config.max_prompt_tokens,
            max_response_tokens=config.max_response_tokens,
        )
        self.backbone = _NoBackbone()
        self.user_ids: dict[str, int] = {}
        self.user_table = nn.Parameter(torch.zeros(0, 0), requires_grad=False)
        self.truth: TrueRewardLike | None = None
        self._prompts: list[str] = []
        self._by_ids: dict[tuple[int, ...], str] | None = None

    # ------------------------------------------------------------------ the true reward
    def use_benchmark(self, bench: Benchmark) -> None:
        if bench.true_reward is None:
            raise ConfigError(
                f"the oracle needs simulated users: benchmark {bench.name!r} has no "
                "true_reward.json (build one with `persalign data build sim`)"
            )
        self.truth = bench.true_reward
        seen = dict.fromkeys(p.prompt for p in (*bench.train, *bench.support, *bench.query))
        self._prompts, self._by_ids = list(seen), None

    def _truth(self) -> TrueRewardLike:
        if self.truth is None:
            raise ConfigError(
                "the oracle scores only a sim benchmark's users; give it the benchmark first "
                "(use_benchmark: `persalign run` and `persalign train` do)"
            )
        return self.truth

    def true_rewards(
        self, prompts: Sequence[str], responses: Sequence[str], users: Sequence[str]
    ) -> torch.Tensor:
        """[N] r_u(x, y) (float32)."""
        return torch.tensor(self._truth().rewards(prompts, responses, users), dtype=torch.float32)

    # ------------------------------------------------------------------ users
    def fit(self, prefs: Sequence[Preference], **kw: Any) -> list[dict[str, float]]:
        """Nothing to learn: the train users are recorded (and must be simulated)."""
        for user in dict.fromkeys(p.user for p in prefs):
            self.adapt(user, ())
        return []

    def adapt(self, user: str, support: Sequence[Preference]) -> None:
        """Look the user up: its w_u is the true one (ConfigError for an unknown user)."""
        if not self._truth().has_user(user):
            raise ConfigError(f"user {user!r} is not a simulated user of this benchmark")
        self.add_user(user, torch.zeros(0))

    # ------------------------------------------------------------------ scoring
    def sequence_rewards(
        self, prompts: Sequence[str], responses: Sequence[str], users: Sequence[str], **kw: Any
    ) -> torch.Tensor:
        return self.true_rewards(prompts, responses, users)

    def prefix_rewards(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        users: Sequence[str],
        *,
        padding_side: str = "right",
        batch_size: int | None = None,
    ) -> PrefixRewards:
        """r_u(x, decode(y_<=t)) for every t of each tokenized (truncated) response."""
        same_length(prompts, responses, users)
        decode = self.formatter.tokenizer.decode
        ids = [self.formatter.response_ids(r) for r in responses]
        flat_p, flat_y, flat_u = [], [], []
        for prompt, tokens, user in zip(prompts, ids, users, strict=True):
            for t in range(len(tokens)):
                flat_p.append(prompt)
                flat_y.append(decode(tokens[: t + 1], skip_special_tokens=True))
                flat_u.append(user)
        values = self.true_rewards(flat_p, flat_y, flat_u)  # [sum of lengths]
        lengths = torch.tensor([len(t) for t in ids], dtype=torch.long)  # [N]
        rewards = torch.zeros(len(ids), int(lengths.max()) if len(ids) else 0)  # [N, R]
        start = 0
        for i, n in enumerate(lengths.tolist()):
            rewards[i, :n] = values[start : start + n]
            start += n
        return PrefixRewards(rewards, lengths)

    # ------------------------------------------------------------------ decoding (ARGS)
    def _prompt_text(self, prompt_ids: Sequence[int]) -> str:
        if self._by_ids is None:
            self._by_ids = {tuple(self.formatter.prompt_ids(p)): p for p in self._prompts}
        key = tuple(prompt_ids)
        found = self._by_ids.get(key)
        return found if found is not None else self.formatter.tokenizer.decode(key)

    def start(self, prompt_ids: Sequence[Sequence[int]], users: Sequence[str]) -> OracleState:
        self._truth()
        prompts = [self._prompt_text(ids) for ids in prompt_ids]
        return OracleState(prompts, list(users), [[] for _ in users])

    def step_rewards(self, state: OracleState, candidates: torch.Tensor) -> torch.Tensor:
        """[B, k] r_u of each row's prefix extended by each candidate token."""
        decode = self.formatter.tokenizer.decode
        state.candidates = candidates
        prompts, texts, users = [], [], []
        for row, tokens in enumerate(state.tokens):
            for token in candidates[row].tolist():
                prompts.append(state.prompts[row])
                texts.append(decode([*tokens, token], skip_special_tokens=True))
                users.append(state.users[row])
        return self.true_rewards(prompts, texts, users).reshape(candidates.shape)

    def commit(self, state: OracleState, choice: torch.Tensor) -> None:
        if state.candidates is None:
            raise RuntimeError("commit before step_rewards")
        picked = state.candidates.gather(1, choice[:, None].to(state.candidates.device))[:, 0]
        for row, token in enumerate(picked.tolist()):
            state.tokens[row].append(token)
