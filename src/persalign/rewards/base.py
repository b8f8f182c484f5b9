"""The interface every reward method implements, and the machinery they share.

    rm = persalign.rewards.create("lore", backbone="bundled:smollm2-135m-instruct")
    rm.fit(bench.train)                                   # theta and the train users' z_k
    rm.adapt("new-user", support)                         # z_k for a new user, theta frozen
    rm.prefix_rewards(prompts, responses, users)          # r(x, y_<=t) for every t
    rm.sequence_rewards(prompts, responses, users)        # one reward per response
    state = rm.start(prompt_ids, users)                   # ARGS: cached prefixes ...
    rm.step_rewards(state, candidates)                    # ... [B, k] candidate rewards
    rm.commit(state, choice)                              # ... keep the chosen candidate

A method is a subclass registered with ``@register_method(name)``. Most methods put a head on the
backbone's last hidden state at every position (``head_values``) and say how per-position values
become a prefix reward (``aggregation``: the value at t, the running mean, or the running sum).
Per-user parameters z_k are rows of one table (``user_table``, ``user_table.py``); adapting a
new user learns a new row on cached, frozen features, so theta cannot change. With
``backbone_training="frozen"`` the backbone has no adapters and training reads cached features
too (``engine/features.py``); ``engine/prefix_scoring.py`` runs ``prefix_rewards``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from persalign.errors import ConfigError
from persalign.models import load_tokenizer
from persalign.models.encoding import EncodedBatch, PromptFormatter, encode_pairs
from persalign.rewards.config import RewardConfig
from persalign.rewards.engine import sequence_memo
from persalign.rewards.engine.aggregation import aggregate, response_index
from persalign.rewards.engine.backbone import Backbone, LoraSettings
from persalign.rewards.engine.prefix_scoring import PrefixRewards, score_prefixes
from persalign.rewards.engine.saving import save_reward_model
from persalign.rewards.engine.stepping import commit_hidden, start_hidden, step_hidden
from persalign.rewards.engine.training import adapt_user_vector, default_training_step, fit
from persalign.rewards.registry import METHODS
from persalign.rewards.user_table import UserTable
from persalign.types import Benchmark, Preference

log = logging.getLogger(__name__)


def register_method(name: str, summary: str = ""):
    """Class decorator: register a RewardModel subclass as ``name``."""

    def decorate(cls: type[RewardModel]) -> type[RewardModel]:
        cls.name = name
        return METHODS.register(name, summary)(cls)

    return decorate


# The functions that define how a method scores text; see RewardModel.pair_eval_mode.
SCORING_FUNCTIONS = (
    "prefix_rewards",
    "sequence_rewards",
    "batch_prefix_rewards",
    "encode",
    "token_values",
    "sequence_logprobs",
    "soft_tokens",
)
# What changes r: every definition of these, the base's and any method's own, first forgets
# the remembered whole-response rewards (engine/sequence_memo.py)
CHANGES_REWARDS = ("fit", "adapt")


class RewardModel(UserTable, nn.Module):
    """Base class: shared backbone theta (LoRA), a head, and per-user parameters z_k."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[RewardConfig]] = RewardConfig
    personalized: ClassVar[bool] = True
    aggregation: ClassVar[str] = "last"
    cumulative: ClassVar[bool] = False  # True when a prefix reward sums token rewards (GenARM)
    # Which comparisons a method enters (paper section 7 and Tables 2-12):
    supports_rgd: ClassVar[bool] = True  # False: no reward-guided decoding (PAL): no ARGS, no RGD
    has_rm_accuracy: ClassVar[bool] = True  # False: no RM accuracy (P-DPO: "-" in the tables)
    default_decoder: ClassVar[str] = "args"  # a run's decoder when its config names none
    # True: a pair's responses may be scored after one shared copy of its prompt (4D mask), as
    # the reward reads hidden states (head_values) or token log-probs at each response's own
    # positions; False (soft tokens before the prompt, P-DPO): two sequences per pair.
    shares_prompt: ClassVar[bool] = True
    # True: the reward reads backbone hidden states, so the heads may train on frozen, cached
    # features (config backbone_training="frozen"); False: a likelihood reward (GenARM, P-DPO).
    reads_hidden_states: ClassVar[bool] = True
    # How evaluation may score a pair as one shared-prompt row (engine/pair_eval.py): "hidden"
    # (the base scoring: head_values of the hidden state at each response position), "logprobs"
    # (a likelihood sum without soft tokens or reference model, GenARM) or None (two
    # prefix_rewards calls). A subclass that overrides a scoring function (SCORING_FUNCTIONS)
    # without declaring this attribute again gets None: it must say that its scoring is the same.
    pair_eval_mode: ClassVar[str | None] = "hidden"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overrides = any(name in cls.__dict__ for name in SCORING_FUNCTIONS)
        if overrides and "pair_eval_mode" not in cls.__dict__:
            cls.pair_eval_mode = None
        for name in CHANGES_REWARDS:  # a method's own fit or adapt forgets the memo too
            if name in cls.__dict__:
                setattr(cls, name, sequence_memo.forgetting(cls.__dict__[name]))

    @classmethod
    def frozen_problem(cls) -> str | None:
        """Why ``backbone_training='frozen'`` cannot train this method (None: it can); the run
        config checks it before anything runs."""
        if cls.reads_hidden_states:
            return None
        return (
            "backbone_training='frozen' needs a reward on backbone hidden states; this "
            "method's reward is a likelihood, train it with 'lora'"
        )

    def __init__(self, config: RewardConfig, backbone: Backbone | None = None, tokenizer=None):
        super().__init__()
        self.config = config
        frozen_backbone = config.backbone_training == "frozen"
        if frozen_backbone and (problem := self.frozen_problem()):
            raise ConfigError(f"{self.name}: {problem}")
        lora = None
        if not frozen_backbone:
            lora = LoraSettings(
                rank=config.lora_rank,
                alpha=config.lora_alpha,
                dropout=config.lora_dropout,
                rslora=config.use_rslora,
            )
        self.training_features = None  # fit's FeatureTable in frozen mode (engine/features.py)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.backbone = backbone or Backbone.load(
                config.backbone,
                lora,
                device=config.device,
                dtype=config.dtype,
                trust_remote_code=config.trust_remote_code,
            )
            tokenizer = tokenizer or load_tokenizer(
                config.backbone, trust_remote_code=config.trust_remote_code
            )
            self.formatter = PromptFormatter(
                tokenizer,
                use_chat_template=config.use_chat_template,
                max_prompt_tokens=config.max_prompt_tokens,
                max_response_tokens=config.max_response_tokens,
            )
            self.user_ids: dict[str, int] = {}
            self.user_table = nn.Parameter(torch.zeros(0, self.user_dim), requires_grad=False)
            if frozen_backbone:  # the head's start: the same with a loaded or a shared backbone
                torch.manual_seed(config.seed)
            self.build(self.backbone.hidden_size)
        self.to(self.backbone.device)

    # ------------------------------------------------------------------ method hooks
    @property
    def user_dim(self) -> int:
        """Size of one user's parameter vector z_k (0 for global methods)."""
        return 0

    def build(self, hidden_size: int) -> None:
        """Create the head modules (called once, seeded)."""

    def head_values(self, hidden: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Per-position values [B, T] from hidden states [B, T, H] and user vectors [B, D].

        Must act on each position independently (adaptation caches response hidden states).
        """
        raise NotImplementedError

    def init_train_users(self, n: int) -> torch.Tensor:
        """Initial z for ``n`` train users, [n, D]."""
        return torch.zeros(n, self.user_dim)

    def new_user_vector(self) -> torch.Tensor:
        """Starting point of a new user's z before adaptation, [D]: the train users' mean."""
        if len(self.user_table) == 0:
            return torch.zeros(self.user_dim, device=self.user_table.device)
        return self.user_table.detach().mean(dim=0)

    def pair_loss(
        self, chosen: torch.Tensor, rejected: torch.Tensor, pairs: Sequence[Preference]
    ) -> torch.Tensor:
        """Bradley-Terry: -log sigmoid(r_w - r_l), averaged over the batch."""
        return -nn.functional.logsigmoid(chosen - rejected).mean()

    def user_regularizer(self, z: torch.Tensor) -> torch.Tensor:
        """Extra loss on a user vector during adaptation (default: none)."""
        return z.new_zeros(())

    def use_benchmark(self, bench: Benchmark) -> None:
        """Called by the runner (and ``persalign train``) with the benchmark before fitting and
        after loading; the default ignores it (the ``oracle`` reads ``bench.true_reward``)."""

    def before_fit(self, pairs: Sequence[Preference]) -> None:
        """Called once before training, after the train users are known (e.g. warm starts)."""

    def make_optimizers(self) -> list[torch.optim.Optimizer]:
        """AdamW over ``trainable_groups`` (methods with alternating steps return several)."""
        return [torch.optim.AdamW(self.trainable_groups(), weight_decay=0.0)]

    def training_step(
        self, pairs: Sequence[Preference], optimizers: list[torch.optim.Optimizer], step: int
    ) -> dict[str, float]:
        """One step on a batch of pairs; returns at least ``loss`` and ``accuracy``."""
        return default_training_step(self, pairs, optimizers)

    # ------------------------------------------------------------------ scoring
    def encode(self, prompts: Sequence[str], responses: Sequence[str], padding_side: str = "right"):
        return encode_pairs(
            self.formatter, list(prompts), list(responses), padding_side=padding_side
        ).to(self.backbone.device)

    def token_values(self, batch: EncodedBatch, z: torch.Tensor | None) -> torch.Tensor:
        """Per-position values [B, T] for a whole batch, one forward pass."""
        hidden, _ = self.backbone.hidden(batch.input_ids, batch.attention_mask, batch.position_ids)
        return self.head_values(hidden.float(), z)

    def batch_prefix_rewards(
        self, batch: EncodedBatch, users: Sequence[str], z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Prefix rewards [B, R] of an encoded batch (with gradients if enabled); ``z`` [B, D]
        replaces ``user_vectors(users)`` (VPL's sampled latents)."""
        z = self.user_vectors(users) if z is None else z
        values = self.token_values(batch, z)  # [B, T]
        index, valid = response_index(batch)  # [B, R]
        return aggregate(values.gather(1, index), valid, self.aggregation)

    def prefix_rewards(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        users: Sequence[str],
        *,
        padding_side: str = "right",
        batch_size: int | None = None,
    ) -> PrefixRewards:
        """r(x, y_<=t) for every response prefix, one forward pass per batch of responses
        (a frozen backbone: each response's states once per process, engine/frozen_states.py)."""
        size = batch_size or self.config.eval_batch_size
        return score_prefixes(self, prompts, responses, users, padding_side, size)

    def sequence_rewards(
        self, prompts: Sequence[str], responses: Sequence[str], users: Sequence[str], **kw: Any
    ) -> torch.Tensor:
        """[N] reward of each whole response (its last prefix reward); with the sequence memo
        on (engine/sequence_memo.py), only the responses not yet scored are computed."""

        def compute(p: list[str], r: list[str], u: list[str]) -> torch.Tensor:
            return self.prefix_rewards(p, r, u, **kw).last()

        return sequence_memo.sequence_rewards(self, prompts, responses, users, compute)

    # ------------------------------------------------------------------ training, adaptation
    @sequence_memo.forgetting
    def fit(self, prefs: Sequence[Preference], **kw: Any) -> list[dict[str, float]]:
        """Learn theta and the train users' z_k (Bradley-Terry unless the method says otherwise)."""
        return fit(self, prefs, **kw)

    @sequence_memo.forgetting
    def adapt(self, user: str, support: Sequence[Preference]) -> None:
        """Learn a new user's z_k from ``support`` with theta frozen (global methods: no-op)."""
        if self.personalized:
            adapt_user_vector(self, user, support)

    def trainable_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups: LoRA, head, user table (each with its learning rate)."""
        cfg = self.config
        head = [
            p
            for n, p in self.named_parameters()
            if p.requires_grad and not n.startswith("backbone.") and n != "user_table"
        ]
        groups = [
            {"params": self.backbone.trainable_parameters(), "lr": cfg.backbone_lr},
            {"params": head, "lr": cfg.head_lr, "weight_decay": cfg.head_weight_decay},
        ]
        if self.personalized and self.user_table.requires_grad:
            groups.append({"params": [self.user_table], "lr": cfg.user_lr, "weight_decay": 0.0})
        return [g for g in groups if g["params"]]

    # ------------------------------------------------------------------ decoding hooks
    def start(self, prompt_ids: Sequence[Sequence[int]], users: Sequence[str]):
        """Encode the prompts once; the state that ``step_rewards`` / ``commit`` advance."""
        return start_hidden(self, prompt_ids, users)

    def step_rewards(self, state, candidates: torch.Tensor) -> torch.Tensor:
        """[B, k] rewards of the prefixes extended by each of k candidate tokens [B, k]."""
        return step_hidden(self, state, candidates)

    def commit(self, state, choice: torch.Tensor) -> None:
        """Append candidate ``choice`` [B] (an index into the last candidates) to each prefix."""
        commit_hidden(self, state, choice)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str) -> None:
        """safetensors weights (LoRA, head, users) + a JSON config; never pickle."""
        save_reward_model(self, path)
