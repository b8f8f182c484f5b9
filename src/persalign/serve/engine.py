"""One decoding step for every live row of a batch, each row with its own user and settings.

    engine = Engine(policy, reward_model)
    batch = engine.start([row_a, row_b])          # prefill: policy (+ reward model) prompts
    engine.extend(batch, engine.start([row_c]))   # continuous batching: rows join mid-flight
    while batch.rows:
        engine.step(batch)                        # one token per row; finished rows retire

The arithmetic of a step is the shared loop's (``decoding.base.decode``) with ARGS's chooser
(``decoding.args.ArgsChooser``) or the policy's own (``PolicyChooser``): candidates are the
policy's top-k log-probs, scores add lambda * the reward model's ``step_rewards``, greedy takes
the argmax. What differs is that lambda, greedy/sampling, the seed, stop strings and the token
budget are per row, and sampling draws each row from its own seeded generator, so a row's
tokens are the ones it gets when decoded alone. Rows of one batch share k (the candidate
tensor is [B, k]); the scheduler keeps one batch per ``Engine.key``: (reward-guided, k).

Fused ARGS: when the reward model's frozen backbone is the policy (``fused_reason`` is None,
logged once at start-up either way), a guided row whose reward-model prompt ids equal its
policy prompt ids decodes with ``decoding.fused_args.FusedArgs``: one policy forward per step
scores the k candidates and advances the one cache, so a user costs a vector, not a model.
Such rows share one batch whatever their user, lambda and k (key ``("fused", 0)``; a row's
candidates beyond its own k score -inf); other guided rows take the two-model batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from persalign.decoding.base import Stepper
from persalign.decoding.fused_args import FusedArgs, FusedState, fused_reason
from persalign.serve.batching import compact, join_states, joinable

log = logging.getLogger(__name__)
FUSED_KEY = ("fused", 0)

Sink = Callable[[str, Any], None]


class StepOutOfMemory(RuntimeError):
    """Choosing the next tokens ran out of memory; the batch's state is unchanged (retry it
    with fewer rows)."""  # (event, payload): ("delta", (str, tokens so far)) | ("done", dict)


@dataclass
class RowSpec:
    """What to decode for one request (token ids already checked against the limits)."""

    policy_ids: list[int]
    max_tokens: int
    reward_ids: list[int] | None = None  # None: the policy alone (zero-shot, icl-rag)
    reward_user: str = ""  # the reward model's user id for this row
    lam: float = 1.0
    k: int = 10
    temperature: float = 0.0  # 0: greedy
    seed: int = 0
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass
class Row:
    """A request being decoded: its spec, what it wrote so far, where its events go."""

    spec: RowSpec
    sink: Sink
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: str = ""  # the part of the visible text already streamed
    finish: str | None = None  # "eos" | "stop" | "length" | "cancelled"
    cancelled: bool = False
    read_from: int = 0  # incremental detokenization: tokens[read_from:] are decoded each step
    read_text: str = ""  # decode(tokens[read_from:read_to]): the context of the next piece
    read_to: int = 0
    submitted: float = field(default_factory=time.perf_counter)
    admitted: float = 0.0
    generator: torch.Generator | None = None

    @property
    def size(self) -> int:
        """Tokens the row can hold at most: its prompt plus its budget."""
        return len(self.spec.policy_ids) + self.spec.max_tokens

    @property
    def key(self) -> tuple[bool, int]:
        """Rows with the same key can share a batch."""
        return (self.spec.reward_ids is not None, self.spec.k if self.spec.reward_ids else 0)


@dataclass
class Batch:
    """Live rows and the states (one row each, same order) of the policy and reward model."""

    rows: list[Row]
    policy: Any
    reward: Any = None

    @property
    def joinable(self) -> bool:
        return joinable(self.policy) and (self.reward is None or joinable(self.reward))


def detokenize(tokenizer: Any, row: Row) -> str:
    """``row.text`` extended by the last token, decoding a short window instead of every token
    (vLLM's prefix/read offsets): the window's text minus its context's text is the new piece,
    kept back while it ends in an incomplete character. Equals decoding all tokens (tested)."""
    window = tokenizer.decode(row.tokens[row.read_from :], skip_special_tokens=True)
    if window.endswith("\ufffd") or len(window) <= len(row.read_text):
        return row.text  # nothing new yet (a split character, a skipped token): keep context
    piece = window[len(row.read_text) :]
    row.read_from, row.read_to = row.read_to, len(row.tokens)
    row.read_text = tokenizer.decode(
        row.tokens[row.read_from : row.read_to], skip_special_tokens=True
    )
    return row.text + piece


def visible(text: str, stops: Sequence[str], final: bool) -> str:
    """The part of ``text`` safe to stream: no leading/trailing blanks, no partial character,
    no tail that could still grow into a stop string (everything when ``final``)."""
    text = text.lstrip()
    if final:
        return text.rstrip()
    text = text.rstrip().rstrip("\ufffd")
    hold = max((len(s) - 1 for s in stops), default=0)
    return text[: len(text) - hold] if hold else text


class Engine:
    """Owns nothing but references: the policy, the reward model and the eos ids (and fused
    ARGS over the two when the reward model's frozen backbone is the policy)."""

    def __init__(self, policy: Stepper, reward_model: Any = None):
        self.policy = policy
        self.rm = reward_model
        self.eos = policy.eos_ids()
        self.fused: FusedArgs | None = None
        self.fused_reason: str | None = "no reward model"
        if reward_model is not None:
            self.fused_reason = fused_reason(policy, reward_model)
            if self.fused_reason is None:
                self.fused = FusedArgs(policy, reward_model)
                log.info(
                    "ARGS serving is fused: one policy forward per step also gives the rewards "
                    "(each user costs a vector, not a model)"
                )
            else:
                log.info(
                    "ARGS serving runs the policy and the reward model apart: %s",
                    self.fused_reason,
                )

    def key(self, row: Row) -> tuple:
        """Rows with the same key can share a batch: fused rows all together, else
        ``Row.key``. A guided row fuses when fused ARGS is on and its reward-model prompt ids
        are its policy prompt ids (the hidden states the head was trained on)."""
        spec, fused = row.spec, self.fused is not None
        if fused and spec.reward_ids is not None and list(spec.reward_ids) == spec.policy_ids:
            return FUSED_KEY
        return row.key

    @torch.no_grad()
    def start(self, rows: list[Row]) -> Batch:
        """Prefill ``rows`` (same key) into a new batch."""
        now = time.perf_counter()
        for row in rows:
            row.admitted = now
            if row.spec.temperature > 0:
                row.generator = torch.Generator().manual_seed(row.spec.seed)
        if self.key(rows[0]) == FUSED_KEY:  # one prefill, one cache for both models
            users = [r.spec.reward_user for r in rows]
            return Batch(rows, self.fused.start([r.spec.policy_ids for r in rows], users))
        policy = self.policy.start([r.spec.policy_ids for r in rows], ["" for _ in rows])
        reward = None
        if rows[0].spec.reward_ids is not None:
            reward = self.rm.start(
                [r.spec.reward_ids for r in rows], [r.spec.reward_user for r in rows]
            )
        return Batch(rows, policy, reward)

    def extend(self, batch: Batch, fresh: Batch) -> None:
        """Append the rows of ``fresh`` to ``batch`` (both joinable, same key)."""
        join_states(batch.policy, fresh.policy)
        if batch.reward is not None:
            join_states(batch.reward, fresh.reward)
        batch.rows += fresh.rows

    def choose(
        self, scores: torch.Tensor, rows: Sequence[Row], widths: Sequence[int] | None = None
    ) -> torch.Tensor:
        """[B] chosen column of ``scores`` [B, C]: argmax, or a draw from the row's generator
        (over the row's first ``widths[i]`` columns: a draw depends on how many there are)."""
        choice = scores.argmax(dim=-1)  # [B]
        for i, row in enumerate(rows):
            if row.generator is not None:
                own = scores[i : i + 1, : widths[i]] if widths else scores[i : i + 1]  # [1, c]
                probs = torch.softmax(own / row.spec.temperature, dim=-1).cpu()
                choice[i] = int(torch.multinomial(probs, 1, generator=row.generator)[0, 0])
        return choice

    @torch.no_grad()
    def next_tokens(self, batch: Batch) -> torch.Tensor:
        """[B] the next token of every row (ARGS or the policy's own choice)."""
        logits = batch.policy.logits.clone()  # [B, V]
        for i, row in enumerate(batch.rows):
            if row.spec.ignore_eos:
                logits[i, sorted(self.eos)] = float("-inf")
        if isinstance(batch.policy, FusedState):
            rows = batch.rows
            lam = torch.tensor([r.spec.lam for r in rows])  # [B]
            ks = [r.spec.k for r in rows]

            def choose(scores: torch.Tensor) -> torch.Tensor:  # [B, max k] -> [B]
                return self.choose(scores, rows, ks)

            return self.fused.step(batch.policy, lam, ks, choose, logits)
        if batch.reward is None:
            return self.choose(logits, batch.rows)
        k = batch.rows[0].spec.k
        top_logp, top_ids = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)  # [B, k]
        device = self.rm.backbone.device
        rewards = self.rm.step_rewards(batch.reward, top_ids.to(device))  # [B, k]
        lam = torch.tensor([r.spec.lam for r in batch.rows], device=top_logp.device)  # [B]
        scores = top_logp + lam[:, None] * rewards.to(top_logp.device)  # [B, k]
        choice = self.choose(scores, batch.rows)  # [B]
        self.rm.commit(batch.reward, choice.to(device))
        return top_ids.gather(1, choice[:, None])[:, 0]

    def keep(self, batch: Batch, keep: list[int]) -> torch.Tensor:
        """Keep rows ``keep`` (indices) of ``batch``; returns them as an index tensor."""
        index = torch.tensor(keep, dtype=torch.long, device=batch.policy.logits.device)
        batch.policy.select(index)  # a FusedState selects its one cache and its logits
        if batch.reward is not None:
            batch.reward.select(index.to(self.rm.backbone.device))
        compact(batch.policy)
        if batch.reward is not None:
            compact(batch.reward)
        batch.rows = [batch.rows[i] for i in keep]
        return index

    def step(self, batch: Batch) -> list[Row]:
        """One token for every row; returns the rows that finished (already out of ``batch``).
        Raises StepOutOfMemory (state unchanged) when choosing the tokens runs out of memory."""
        try:
            chosen = self.next_tokens(batch)  # [B]
        except torch.OutOfMemoryError as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise StepOutOfMemory(
                str(exc).splitlines()[0] if str(exc) else "out of memory"
            ) from exc
        keep, done = [], []
        for i, row in enumerate(batch.rows):
            if self.record(row, int(chosen[i])):
                keep.append(i)
            else:
                done.append(row)
        if len(keep) < len(batch.rows):
            chosen = chosen[self.keep(batch, keep).to(chosen.device)]
        if batch.rows and not isinstance(batch.policy, FusedState):
            self.policy.advance(batch.policy, chosen)  # fused: the step advanced the cache
        return done

    def record(self, row: Row, token: int) -> bool:
        """Add ``token`` to ``row``, stream what became visible; False when the row is done."""
        if row.cancelled:
            row.finish = "cancelled"
            return False
        if token in self.eos and not row.spec.ignore_eos:
            row.finish = "eos"
            return False
        row.tokens.append(token)
        row.text = detokenize(self.policy.tokenizer, row)
        for stop in row.spec.stop:
            at = row.text.find(stop)
            if at != -1 and row.text[:at].strip():  # as decode's _cut_at_stop
                row.text, row.finish = row.text[:at], "stop"
                return False
        if len(row.tokens) >= row.spec.max_tokens:
            row.finish = "length"
            return False
        shown = visible(row.text, row.spec.stop, final=False)
        if len(shown) > len(row.sent) and shown.startswith(row.sent):
            row.sink("delta", (shown[len(row.sent) :], len(row.tokens)))
            row.sent = shown
        return True

    def close(self, row: Row) -> None:
        """Send a finished row's last text and its summary to its sink."""
        final = visible(row.text, row.spec.stop, final=True)
        if len(final) > len(row.sent) and final.startswith(row.sent):
            row.sink("delta", (final[len(row.sent) :], len(row.tokens)))
        row.sink(
            "done",
            {
                "text": final,
                "tokens": list(row.tokens),
                "finish_reason": row.finish or "length",
                "prompt_tokens": len(row.spec.policy_ids),
                "queue_seconds": row.admitted - row.submitted,
            },
        )
