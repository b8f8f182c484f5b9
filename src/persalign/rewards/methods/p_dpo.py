"""P-DPO: personalized DPO, a policy with user soft tokens whose implicit reward is personal.

    rm = persalign.rewards.create("p-dpo", n_soft_tokens=8, beta=0.5)
    rm.fit(bench.train)                       # LoRA + generic tokens + train users' tokens
    rm.adapt("new-user", support)             # only that user's tokens, DPO on the support
    rm.sequence_rewards(prompts, responses, ["new-user"] * len(prompts))
    rm.generate(prompts, ["new-user"] * len(prompts), max_new_tokens=64)   # greedy, cached

Li et al., 2024, "Personalized Language Modeling from Personalized Human Feedback" (P-RLHF;
github.com/HumainLab/Personalized_RLHF, ``prlhf/user_model.py``, ``user_language_model.py``,
``user_dpo_trainer.py``). The policy pi_theta is the backbone with LoRA, conditioned on a user
by n soft tokens (appendix F of our paper: n = 8) put in front of the prompt as input
embeddings. The user model is the repo's "individual" one: e_i = e_0 + o_i, the generic tokens
e_0 [n, H] (shared, part of theta) plus the user's offsets o_i (the user vector z_i = o_i
flattened, ``user_dim = n * H``). An unknown or new user starts from o = 0, i.e. the generic
tokens. As in the repo, e_0 and the train users' o_i start as embeddings of random vocabulary
tokens. The reference pi_ref is the same backbone with its LoRA adapters disabled and no soft
tokens. The implicit reward of a prefix (aggregation "sum", cumulative):

    r(x, y_<=t; u) = beta sum_{s<=t} [log pi_theta(y_s|e_u, x, y_<s) - log pi_ref(y_s|x, y_<s)]

Training: DPO, L(u) = -log sigmoid(r(x, y_w; u) - r(x, y_l; u)), and as in the repo's trainer
L = alpha * L(e_i) + (1 - alpha) * L(e_0): the generic tokens also learn the population's
preference. The repo's defaults: beta = 0.5, alpha = 0.5, one learning rate 5e-5 for LoRA,
generic tokens and user tokens alike, so ``head_lr`` and ``user_lr`` default to 5e-5 and a new
user adapts at it too (``adapt_lr`` None: ``user_lr``); set them apart for separate rates.
``adapt`` trains only o_new by DPO on the support set; LoRA and e_0 stay bitwise unchanged.
It runs each support pair's prompt once (``pdpo_adapt``: chosen and rejected after one prompt
copy, 4D mask), takes ``adapt_steps_per_pass`` Adam steps per backbone pass on the first-order
margins (10: 10 passes for the 100 steps) and can stop early on the support loss
(``adapt_patience``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from persalign.models.encoding import EncodedBatch
from persalign.rewards.base import register_method
from persalign.rewards.config import RewardConfig
from persalign.rewards.engine.prefix_scoring import same_length
from persalign.rewards.engine.training import frozen, start_user_vector
from persalign.rewards.methods._likelihood import (
    LikelihoodRM,
    feed,
    open_stream,
    response_logprobs,
)
from persalign.rewards.methods._pdpo_adapt import train_user_tokens
from persalign.types import Preference

log = logging.getLogger(__name__)


class PDPOConfig(RewardConfig):
    """P-DPO's options (appendix F: 8 soft tokens; the rest from the P-RLHF repository)."""

    n_soft_tokens: int = Field(8, ge=1, description="User soft tokens before the prompt (app. F).")
    beta: float = Field(0.5, gt=0, description="DPO beta (P-RLHF default and TL;DR script: 0.5).")
    alpha: float = Field(
        0.5, ge=0, le=1, description="Weight of the individual-user DPO loss; 1 - alpha: generic."
    )
    soft_token_init: Literal["vocab", "uniform"] = Field(
        "vocab", description="Start soft tokens as random vocabulary embeddings, or uniform."
    )
    init_range: float = Field(0.5, gt=0, description="Uniform init range [-r, r] ('uniform').")
    head_lr: float = Field(
        5e-5, gt=0, description="Learning rate of the generic soft tokens (P-RLHF: 5e-5)."
    )
    user_lr: float = Field(
        5e-5, gt=0, description="LR of the user soft tokens, train and adapt (P-RLHF: 5e-5)."
    )
    adapt_shared_prompt: bool = Field(
        True,
        description="Adapt a new user on one row per support pair (prompt run once, 4D mask); "
        "False: the two-sequence path (same result up to rounding, slower).",
    )
    adapt_steps_per_pass: int = Field(
        10,
        ge=1,
        description="Adam steps per backbone pass when adapting a new user: each pass gives "
        "the support margins and their gradients in z, the steps between use that first-order "
        "model (exact at the pass); 1: a backbone pass at every step.",
    )
    adapt_patience: int | None = Field(
        None,
        ge=1,
        description="Stop a new user's adaptation once the support loss has not dropped by "
        "more than adapt_min_delta below its best for this many steps; None: all adapt_steps.",
    )
    adapt_min_delta: float = Field(
        0.0, ge=0, description="Support-loss drop that counts as progress (adapt_patience)."
    )


@register_method("p-dpo", summary="Personalized DPO: user soft tokens, implicit DPO reward")
class PDPO(LikelihoodRM):
    """Personalized DPO policy whose implicit reward beta * log(pi_theta / pi_ref) is personal."""

    config_class = PDPOConfig
    personalized = True
    uses_reference = True
    has_rm_accuracy = False  # Tables 2-12: "-"; scored as a policy (personalized-policy)
    shares_prompt = False  # training: soft tokens + reference model (adaptation packs its own)
    pair_eval_mode = None  # soft tokens go before the prompt: two sequences per pair
    default_decoder = "p-dpo"  # it writes with its own personalized policy
    config: PDPOConfig

    @property
    def user_dim(self) -> int:
        return self.config.n_soft_tokens * self.backbone.hidden_size

    def build(self, hidden_size: int) -> None:
        self.adapt_losses: dict[str, list[float]] = {}  # each adapted user's support losses
        self.adapt_passes: dict[str, int] = {}  # and its backbone passes
        self.generic_tokens = nn.Parameter(self._initial_tokens(self.config.n_soft_tokens))

    def _initial_tokens(self, count: int) -> torch.Tensor:
        """[count, H] float32: random vocabulary embeddings, or uniform in [-r, r]."""
        hidden = self.backbone.hidden_size
        if self.config.soft_token_init == "uniform":
            return torch.empty(count, hidden).uniform_(
                -self.config.init_range, self.config.init_range
            )
        vocab = self.backbone.model.get_input_embeddings().weight.shape[0]
        ids = torch.randperm(vocab)[:count] if count <= vocab else torch.randint(vocab, (count,))
        with torch.no_grad():
            return self.backbone.embed(ids.to(self.backbone.device)).float().cpu().clone()

    def init_train_users(self, n: int) -> torch.Tensor:
        """Train users' offsets o_i, [n, n_tokens * H] (as the repo, vocabulary embeddings)."""
        return self._initial_tokens(n * self.config.n_soft_tokens).reshape(n, self.user_dim)

    def new_user_vector(self) -> torch.Tensor:
        """A new user starts from the generic tokens: o = 0."""
        return torch.zeros(self.user_dim, device=self.user_table.device)

    def reward_scale(self) -> float:
        return self.config.beta

    def soft_tokens(self, z: torch.Tensor | None) -> torch.Tensor:
        """e_0 + o_u for each row, [B, n, H]."""
        if z is None:
            raise ValueError("P-DPO needs user vectors")
        return self.generic_tokens[None] + z.reshape(len(z), self.config.n_soft_tokens, -1)

    # ------------------------------------------------------------------ training
    def training_step(
        self, pairs: Sequence[Preference], optimizers: list[torch.optim.Optimizer], step: int
    ) -> dict[str, float]:
        """alpha * DPO(e_0 + o_i) + (1 - alpha) * DPO(e_0) on a batch of pairs."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        n = len(pairs)
        batch = self.encode(
            [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]
        )
        z = self.user_vectors([p.user for p in pairs] * 2)  # [2n, D]
        reference = self.reference_logprobs(batch).sum(dim=1)  # [2n]
        scale = self.reward_scale()

        def rewards(vectors: torch.Tensor) -> torch.Tensor:
            policy = self.policy_logprobs(batch, vectors).sum(dim=1)
            return scale * (policy - reference)  # [2n]

        individual = rewards(z)
        loss = self.config.alpha * self.pair_loss(individual[:n], individual[n:], pairs)
        if self.config.alpha < 1:
            generic = rewards(torch.zeros_like(z))
            loss = loss + (1 - self.config.alpha) * self.pair_loss(generic[:n], generic[n:], pairs)
        loss.backward()
        if self.config.grad_clip:
            params = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        for opt in optimizers:
            opt.step()
        accuracy = (individual[:n] > individual[n:]).float().mean().item()
        return {"loss": loss.item(), "accuracy": accuracy}

    def policy_logprobs(self, batch: EncodedBatch, z: torch.Tensor) -> torch.Tensor:
        """[B, R] log pi_theta(y_t | e_0 + o, x, y_<t) (with gradients)."""
        return response_logprobs(self.backbone, batch, self.soft_tokens(z))

    @torch.no_grad()
    def personalized_logprob_sums(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        users: Sequence[str],
        *,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([N] float64 sum_t log pi_theta(y_t | e_u, x, y_<t), [N] long |y|): the personalized
        policy's log-likelihood of each response (the ``personalized-policy`` scorer's parts),
        rendered and tokenized as the ``p-dpo`` decoder writes (this model's formatter)."""
        same_length(prompts, responses, users)
        size = batch_size or self.config.eval_batch_size
        sums, lengths = [], []
        was_training = self.training
        self.eval()
        for start in range(0, len(prompts), size):
            sl = slice(start, start + size)
            batch = self.encode(prompts[sl], responses[sl])
            logp = self.policy_logprobs(batch, self.user_vectors(list(users[sl])))  # [b, R]
            sums.append(logp.double().sum(dim=1).cpu())
            lengths.append(batch.response_lengths.cpu())
        self.train(was_training)
        if not sums:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
        return torch.cat(sums), torch.cat(lengths).long()

    def adapt(self, user: str, support: Sequence[Preference]) -> None:
        """Learn o_user by DPO on ``support`` (Adam, ``adapt_steps``, early stopping with
        ``adapt_patience``); theta is frozen."""
        start = start_user_vector(self, user, support)
        if start is None:
            return
        pairs, z = start
        was_training = self.training
        self.eval()
        with frozen(self):
            losses, passes = train_user_tokens(self, pairs, z)
        self.train(was_training)
        self.adapt_losses[user] = losses
        self.adapt_passes[user] = passes
        self.add_user(user, z.detach())

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_ids(
        self, prompt_ids: Sequence[Sequence[int]], users: Sequence[str], max_new_tokens: int = 64
    ) -> list[list[int]]:
        """Greedy decoding from the personalized policy; token ids without the final eos.

        The ``p-dpo`` decoder (persalign.decoding) writes with the same policy through the
        shared decoding loop (sampling, stop strings); this is its plain greedy reference.
        """
        stream = open_stream(
            self.backbone,
            prompt_ids,
            self.formatter.tokenizer.pad_token_id,
            self.soft_tokens(self.user_vectors(users)),
        )
        stops = torch.tensor(sorted(self._stop_ids()), device=self.backbone.device)
        out: list[list[int]] = [[] for _ in prompt_ids]
        done = torch.zeros(len(prompt_ids), dtype=torch.bool, device=self.backbone.device)
        for step in range(max_new_tokens):
            tokens = stream.logp.argmax(dim=-1)  # [B]
            done = done | torch.isin(tokens, stops)
            for row in (~done).nonzero().flatten().tolist():
                out[row].append(int(tokens[row]))
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            feed(self.backbone, stream, tokens)
        return out

    def generate(
        self,
        prompts: Sequence[str],
        users: Sequence[str],
        max_new_tokens: int = 64,
        *,
        batch_size: int | None = None,
    ) -> list[str]:
        """Greedy responses of the personalized policy (it "can generate directly")."""
        if len(prompts) != len(users):
            raise ValueError("prompts and users must have the same length")
        size = batch_size or self.config.eval_batch_size
        was_training = self.training
        self.eval()
        texts: list[str] = []
        for start in range(0, len(prompts), size):
            ids = [self.formatter.prompt_ids(p) for p in prompts[start : start + size]]
            rows = self.generate_ids(ids, users[start : start + size], max_new_tokens)
            texts += self.formatter.tokenizer.batch_decode(rows, skip_special_tokens=True)
        self.train(was_training)
        return texts

    def eos_ids(self) -> set[int]:
        """Token ids that end a response (the ``p-dpo`` decoder's stop tokens)."""
        return {i for i in self._stop_ids() if i >= 0}

    def _stop_ids(self) -> set[int]:
        """The tokenizer's eos and the model's generation-config eos ids."""
        ids = {self.formatter.tokenizer.eos_token_id}
        config = getattr(self.backbone.base, "generation_config", None)
        extra = getattr(config, "eos_token_id", None) if config is not None else None
        ids.update(extra if isinstance(extra, list) else [extra])
        ids.discard(None)
        if not ids:
            ids.add(-1)
        return {int(i) for i in ids}
