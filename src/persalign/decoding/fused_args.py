"""Fused ARGS: one forward of the policy per step gives both its logits and the rewards.

    reason = fused_reason(policy, rm)             # None: the reward model can ride the policy
    fused = FusedArgs(policy, rm)
    state = fused.start(prompt_ids, users)        # one prefill, one cache; state.logits [B, V]
    tokens = fused.step(state, lam, k, choose)    # [B]; state.logits are the next step's
    state.select(keep)                            # finished rows leave

When the reward model's backbone is frozen (no LoRA, or LoRA B matrices all zero, as in a
``backbone_training: frozen`` model), has the policy's weights, and encodes prompts exactly as
the policy does (same chat-template use; a prompt no longer than both prompt budgets, else the
same budget), the reward model's hidden
states ARE the policy's. Then a step needs one forward: the k candidate tokens of each row go
through the policy as k tokens at position t with a tree mask (each sees the cached prefix and
itself, ``rewards.engine.stepping.score_candidates``); the method's head on their hidden states
(with the row's user vector) gives the rewards; the chosen candidate's K/V is committed
(``commit_hidden``) and the output layer on its hidden state gives the next step's logits. No
second model, no second cache. Methods whose rewards are not the head on hidden states
(GenARM, P-DPO, any method with its own decoding hooks) are not fusable.

Rows carry their own user, lambda and k (``step`` takes a float or a [B] tensor of lambdas, an
int or one k per row). ``ArgsDecoder`` (setting ``fused: auto|on|off``) uses this path when
``fused_reason`` is None; ``persalign serve`` can drive ``FusedArgs`` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from persalign.decoding.policy import Policy
from persalign.rewards.base import RewardModel
from persalign.rewards.engine.stepping import (
    StepState,
    commit_hidden,
    prefill,
    score_candidates,
)

DECODING_HOOKS = ("start", "step_rewards", "commit")  # a method with its own is not fusable


def base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's base weights by name, LoRA adapters left out (peft's names unwrapped)."""
    weights = {}
    for name, tensor in model.state_dict().items():
        if "lora_" not in name:
            weights[name.replace(".base_layer.", ".")] = tensor
    return weights


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two decoder stacks have exactly the same base weights (names and values); the
    output layer plays no part in the rewards."""
    if a is b:
        return True
    left, right = base_weights(a), base_weights(b)
    if left.keys() != right.keys():
        return False
    for name, x in left.items():
        y = right[name]
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.data_ptr() != y.data_ptr() and not torch.equal(x, y.to(x.device)):
            return False
    return True


def lora_is_zero(rm: RewardModel) -> bool:
    """True when the backbone has no LoRA, or every LoRA B matrix is exactly zero."""
    return all(
        not bool(p.detach().any())
        for name, p in rm.backbone.named_parameters()
        if "lora_B" in name or "lora_embedding_B" in name
    )


def encoding_difference(policy: Policy, rm: RewardModel) -> str | None:
    """How the reward model renders prompts differently from the policy (None: the same ids,
    up to the shorter of the two prompt budgets: see ``cut_differently``)."""
    a, b = policy.formatter, rm.formatter
    if a.use_chat_template != b.use_chat_template:
        on = "with" if b.use_chat_template else "without"
        return f"the reward model renders prompts {on} the chat template, the policy does not"
    if a.use_chat_template and a.tokenizer.chat_template != b.tokenizer.chat_template:
        return "the reward model's chat template differs from the policy's"
    if a.tokenizer is not b.tokenizer and a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        return "the reward model's vocabulary differs from the policy's"
    return None


def cut_differently(policy: Policy, rm: RewardModel, policy_ids: Sequence[int]) -> bool:
    """Whether a prompt the policy encodes as ``policy_ids`` may reach the reward model cut
    otherwise (the budgets differ and the prompt is not shorter than both)."""
    a, b = policy.formatter.max_prompt_tokens, rm.formatter.max_prompt_tokens
    return a != b and len(policy_ids) >= min(a, b)


@torch.no_grad()
def logits_are_head_of_hidden(policy: Policy) -> bool:
    """Whether the policy's logits are its output layer on the decoder's last hidden states
    (true of Llama and Qwen2; not of models that scale or soft-cap logits)."""
    probe = torch.arange(3, device=policy.device)[None] % policy.model.config.vocab_size
    logits = policy.model(input_ids=probe).logits.float()  # [1, 3, V]
    hidden = policy.model.get_decoder()(input_ids=probe).last_hidden_state
    return torch.allclose(policy.head_logits(hidden), logits, rtol=1e-5, atol=1e-5)


def fused_reason(policy: Policy, rm: Any) -> str | None:
    """None when ``FusedArgs`` computes exactly what unfused ARGS does; else why not."""
    if not isinstance(policy, Policy):
        return f"the writer is a {type(policy).__name__}, not the base policy"
    if not isinstance(rm, RewardModel):
        return f"{type(rm).__name__} is not a persalign reward model"
    own = [h for h in DECODING_HOOKS if getattr(type(rm), h) is not getattr(RewardModel, h)]
    if rm.pair_eval_mode != "hidden" or own:
        return f"{rm.name}'s rewards are not a head on the backbone's hidden states"
    if rm.aggregation not in ("last", "mean", "sum"):
        return f"{rm.name} aggregates token values by {rm.aggregation!r}"
    if not lora_is_zero(rm):
        frozen = getattr(rm.config, "backbone_training", "lora") == "frozen"
        said = " although its config says backbone_training: frozen" if frozen else ""
        return f"the reward model's LoRA weights are not zero (a LoRA-trained backbone){said}"
    if rm.backbone.device != policy.device or rm.backbone.dtype != policy.model.dtype:
        return (
            f"the reward model runs on {rm.backbone.device}/{rm.backbone.dtype}, the policy on "
            f"{policy.device}/{policy.model.dtype}"
        )
    if not same_weights(policy.model.get_decoder(), rm.backbone.decoder):
        return "the reward model's backbone is not the policy (different base weights)"
    different = encoding_difference(policy, rm)
    if different:
        return different
    if not logits_are_head_of_hidden(policy):
        return f"{type(policy.model).__name__}'s logits are not its output layer on hidden states"
    return None


@dataclass
class FusedState:
    """The live rows: the reward model's step state over the policy's one cache, and the
    policy's next-token logits."""

    reward: StepState  # cache (the only one), mask, positions, user vectors, running totals
    logits: torch.Tensor  # [B, V] float32

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` [b] (finished rows leave)."""
        self.reward.select(rows)
        self.logits = self.logits[rows]


class FusedArgs:
    """ARGS on one forward per step; the caller checked ``fused_reason(policy, rm) is None``."""

    def __init__(self, policy: Policy, rm: RewardModel):
        self.policy = policy
        self.rm = rm

    @torch.no_grad()
    def start(self, prompt_ids: Sequence[Sequence[int]], users: Sequence[str]) -> FusedState:
        """Prefill the left-padded prompts once; the state holds their next-token logits."""
        cache = DynamicCache(config=self.policy.model.config)
        state, last = prefill(self.rm, prompt_ids, users, self.policy.decode_hidden, cache)
        return FusedState(state, self.policy.head_logits(last))  # logits [B, V]

    @torch.no_grad()
    def step(
        self,
        state: FusedState,
        lam: float | torch.Tensor,
        k: int | Sequence[int],
        choose: Callable[[torch.Tensor], torch.Tensor],
        logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The next token [B] of every row, after one forward of its k candidates.

        ``lam``: one lambda, or one per row [B]; ``k``: one, or one per row (the candidates are
        the top max(k); a row's others score -inf). ``choose`` maps scores [B, K] to the chosen
        column [B] (greedy argmax or a seeded draw). ``logits`` [B, V] replace ``state.logits``
        (e.g. with eos masked). Afterwards the cache holds the chosen candidates and
        ``state.logits`` are the policy's logits after them.
        """
        logits = state.logits if logits is None else logits
        widths = [k] * len(logits) if isinstance(k, int) else list(k)
        top_logp, top_ids = torch.log_softmax(logits, dim=-1).topk(max(widths), dim=-1)  # [B, K]
        rewards, hidden = score_candidates(
            self.rm, state.reward, top_ids, self.policy.decode_hidden
        )  # [B, K], [B, K, H]
        if isinstance(lam, torch.Tensor):
            lam = lam.to(top_logp)[:, None]  # [B, 1]
        scores = top_logp + lam * rewards  # [B, K]
        if min(widths) < max(widths):
            width = torch.tensor(widths, device=scores.device)[:, None]  # [B, 1]
            column = torch.arange(scores.shape[1], device=scores.device)[None]  # [1, K]
            scores = scores.masked_fill(column >= width, float("-inf"))
        choice = choose(scores).to(top_ids.device)  # [B]
        rows = torch.arange(len(choice), device=choice.device)
        commit_hidden(self.rm, state.reward, choice)
        state.logits = self.policy.head_logits(hidden[rows, choice])  # [B, V]
        return top_ids.gather(1, choice[:, None])[:, 0]
