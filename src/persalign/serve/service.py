"""The server's state: models, limits, scheduler, users; turns request bodies into rows.

    service = Service(policy, rm, ServeLimits(), state_dir="runs/lore/serving")  # SQLite there
    service = Service(policy, rm, ServeLimits(), store="postgresql://db/persalign")  # shared
    service.start()                                  # loads the stored users, starts the thread
    spec = service.spec(body)                        # a RowSpec, or an ApiError (4xx)
    info = await service.onboard("alice", prefs)     # adapt (off the decoding thread), install
    service.delete("alice")                          # store and this replica
    service.stop()                                   # finishes in-flight rows

Prompts are never cut to fit: one over the policy's or the reward model's prompt budget, or
whose prompt plus ``max_tokens`` exceeds the policy's context, is a 400.
"""

from __future__ import annotations

import logging
import secrets
import threading
from pathlib import Path
from typing import Any

from persalign.decoding import DECODERS, Policy, create_decoder
from persalign.decoding.base import Decoder, GenerationRequest
from persalign.decoding.icl import icl_prompt_ids
from persalign.models.encoding import PromptFormatter
from persalign.serve.adapt_process import AdaptProcess
from persalign.serve.api_errors import ApiError
from persalign.serve.engine import Engine, RowSpec
from persalign.serve.onboarding import Onboarder
from persalign.serve.personal import Personalizer, UnknownUser
from persalign.serve.prometheus import ServeMetrics
from persalign.serve.retrieval import ServedIclRag
from persalign.serve.scheduler import Scheduler
from persalign.serve.schemas import ChatRequest, CompletionRequest, ServeLimits, _Common
from persalign.serve.store import UserStore
from persalign.types import Preference

log = logging.getLogger(__name__)


def servable_decoders(with_reward: bool) -> tuple[str, ...]:
    """The decoders whose class says ``servable`` (those needing a reward model only
    ``with_reward``): reward-guided ones decode with the engine's ARGS step, the others with
    the policy alone on the prompt their ``prepare`` builds."""
    return tuple(
        entry.name
        for entry in DECODERS.entries()
        if entry.obj.servable and (with_reward or not entry.obj.needs_reward_model)
    )


def full_prompt_ids(formatter: PromptFormatter, prompt: str) -> list[int]:
    """``formatter.prompt_ids(prompt)`` without its middle cut (the server rejects instead)."""
    text = formatter.render(prompt)
    return list(
        formatter.tokenizer(text, add_special_tokens=not formatter.use_chat_template)["input_ids"]
    )


class Service:
    """Everything a request handler needs, built once per server."""

    def __init__(
        self,
        policy: Policy,
        reward_model: Any,
        limits: ServeLimits,
        state_dir: str | Path | None = None,
        icl_options: dict[str, Any] | None = None,
        store: str | None = None,
        adapter: AdaptProcess | None = None,
    ):
        self.policy, self.rm, self.limits = policy, reward_model, limits
        self.metrics = ServeMetrics()
        self.people = Personalizer(reward_model, limits.unknown_user)
        self.store = (
            UserStore.open(store, folder=state_dir)
            if store is not None or state_dir is not None
            else None
        )
        self.support: dict[str, list[Preference]] = {}
        self.prompters = {  # servable decoders of the policy alone: they build the prompt
            name: _prompter(name, policy, self.support, icl_options or {})
            for name in self.decoders()
            if not DECODERS.get(name).needs_reward_model
        }
        self.scheduler = Scheduler(
            Engine(policy, reward_model),
            limits.max_batch,
            self.metrics,
            max_queue=limits.max_queue,
            queue_timeout=limits.queue_timeout,
            max_batch_tokens=limits.max_batch_tokens,
        )
        self.context = int(getattr(policy.model.config, "max_position_embeddings", 0) or 1 << 30)
        rag = next((p for p in self.prompters.values() if isinstance(p, ServedIclRag)), None)
        self.onboarder = Onboarder(
            self.people,
            self.store,
            self.scheduler,
            self.support,
            limits,
            on_support=rag.embed_support if rag is not None else None,
            adapter=adapter,
        )
        self.preparing = threading.Lock()  # the tokenizers: one request at a time
        if limits.decoder not in self.decoders():
            raise ValueError(f"decoder {limits.decoder!r} needs a reward model (--reward)")

    def decoders(self) -> tuple[str, ...]:
        return servable_decoders(with_reward=self.rm is not None)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Load the stored users (adapting imported ones), then start decoding."""
        self.onboarder.replay()
        self.scheduler.start()

    def stop(self) -> None:
        self.onboarder.stop()
        self.scheduler.stop()

    # ------------------------------------------------------------------ requests
    def _options(self, body: _Common) -> tuple[str, float, int, int]:
        lim, opts = self.limits, body.persalign
        model = body.model
        if model != lim.model_name:
            raise ApiError(404, f"model {model!r} not found (GET /v1/models)", param="model")
        decoder = opts.decoder or lim.decoder
        if decoder not in self.decoders():
            raise ApiError(
                400,
                f"decoder must be one of {', '.join(self.decoders())}",
                param="persalign.decoder",
            )
        lam = lim.lam if opts.lam is None else opts.lam
        k = lim.k if opts.k is None else opts.k
        if lam > lim.max_lam:
            raise ApiError(400, f"lam must be in [0, {lim.max_lam}]", param="persalign.lam")
        if k > lim.max_k:
            raise ApiError(400, f"k must be in [1, {lim.max_k}]", param="persalign.k")
        tokens = body.max_tokens
        if isinstance(body, ChatRequest) and body.max_completion_tokens is not None:
            tokens = body.max_completion_tokens
        tokens = lim.default_max_tokens if tokens is None else tokens
        if not 1 <= tokens <= lim.max_tokens:
            raise ApiError(400, f"max_tokens must be in [1, {lim.max_tokens}]", param="max_tokens")
        return decoder, lam, k, tokens

    def _check_length(self, ids: list[int], formatter: PromptFormatter, tokens: int, what: str):
        if len(ids) > formatter.max_prompt_tokens:
            raise ApiError(
                400,
                f"the {what} prompt has {len(ids)} tokens, more than the "
                f"{formatter.max_prompt_tokens} allowed (it is not truncated)",
                param="prompt",
            )
        budget = self.limits.max_batch_tokens
        if what == "policy" and budget is not None and len(ids) + tokens > budget:
            raise ApiError(
                400,
                f"prompt ({len(ids)} tokens) plus max_tokens ({tokens}) exceeds "
                f"--max-batch-tokens {budget}",
                param="max_tokens",
            )
        if what == "policy" and len(ids) + tokens > self.context:
            raise ApiError(
                400,
                f"prompt ({len(ids)} tokens) plus max_tokens ({tokens}) exceeds "
                f"the context of {self.context} tokens",
                param="max_tokens",
            )

    def spec(self, body: CompletionRequest | ChatRequest) -> RowSpec:
        """The row for a validated request body; ApiError when it is outside the limits."""
        self.onboarder.sync(body.user)  # another replica may have onboarded or deleted them
        demos = None
        prompter = self.prompters.get(body.persalign.decoder or self.limits.decoder)
        if isinstance(prompter, ServedIclRag) and isinstance(body, CompletionRequest):
            # retrieval (icl-rag embeds the query) outside the lock: requests embed in parallel
            demos = prompter.demonstrations(GenerationRequest("q", body.user or "", body.prompt))
        with self.preparing:
            return self._spec(body, demos)

    def _spec(self, body: CompletionRequest | ChatRequest, demos=None) -> RowSpec:
        decoder, lam, k, tokens = self._options(body)
        try:
            reward_user = self.people.reward_user(body.user)
        except UnknownUser as exc:
            raise ApiError(404, str(exc), param="user") from None
        guided = DECODERS.get(decoder).needs_reward_model
        prompter = self.prompters.get(decoder)
        builds_prompt = prompter is not None and _builds_prompt(prompter)
        if isinstance(body, ChatRequest):
            if builds_prompt:
                raise ApiError(400, f"{decoder} takes /v1/completions", param="persalign.decoder")
            messages = [m.as_dict() for m in body.messages]
            policy_ids = self.policy.formatter.messages_ids(messages)
            reward_ids = self.rm.formatter.messages_ids(messages) if guided else None
        elif builds_prompt and demos is not None:  # icl-rag: demonstrations chosen already
            settings = prompter.settings
            policy_ids = icl_prompt_ids(
                self.policy.formatter,
                demos,
                body.prompt,
                settings.max_prompt_tokens,
                settings.demonstrations,
            )[0]
            reward_ids = None
        elif builds_prompt:
            request = GenerationRequest("q", body.user or "", body.prompt)
            policy_ids = list(prompter.prepare([request])[0].prompt_ids or [])
            reward_ids = None
        else:
            template = body.persalign.chat_template
            if template is None:
                template = self.limits.completions_chat_template
            policy_ids = (
                full_prompt_ids(self.policy.formatter, body.prompt)
                if template
                else list(self.policy.tokenizer(body.prompt)["input_ids"])
            )
            # the reward model reads the prompt in its own format, as it was trained
            reward_ids = full_prompt_ids(self.rm.formatter, body.prompt) if guided else None
        if not policy_ids:
            raise ApiError(400, "the prompt has no tokens", param="prompt")
        self._check_length(policy_ids, self.policy.formatter, tokens, "policy")
        if not guided:
            reward_ids = None
        elif reward_ids is not None:
            self._check_length(reward_ids, self.rm.formatter, tokens, "reward model")
        return RowSpec(
            policy_ids=policy_ids,
            max_tokens=tokens,
            reward_ids=reward_ids,
            reward_user=reward_user,
            lam=lam,
            k=k,
            temperature=body.temperature or 0.0,
            seed=_seed(body),
            stop=body.stops(),
            ignore_eos=body.persalign.ignore_eos,
        )

    # ------------------------------------------------------------------ users
    async def onboard(self, user: str, items: list[Any], key: str | None = None) -> dict:
        """Adapt ``user`` off the decoding thread; store, install (onboarding.py)."""
        return await self.onboarder.onboard(user, items, key)

    def delete(self, user: str) -> dict[str, Any]:
        """Remove ``user``'s texts and vector (404 when neither the store nor we know them)."""
        if not self.onboarder.delete(user):
            raise ApiError(404, f"no onboarded user {user!r}", param="user_id")
        return {"id": user, "object": "user.deleted", "deleted": True}

    def user_status(self, user: str | None) -> str:
        """``own`` (the user's vector), ``default`` (the population's) or ``global``."""
        if not self.people.personalized:
            return "global"
        return "own" if self.people.known(user) else "default"

    def user_info(self, user: str) -> dict[str, Any]:
        self.onboarder.sync(user, force=True)
        return self.onboarder.info(user)


def _seed(body: _Common) -> int:
    """The request's seed; a fresh one when it samples without one (returned to the client)."""
    if body.seed is not None:
        return body.seed
    return secrets.randbelow(2**31) if (body.temperature or 0) > 0 else 0


def _prompter(name: str, policy: Policy, support: dict, options: dict[str, Any]):
    """An instance of decoder ``name`` (its options among ``options``) to build prompts;
    icl-rag as the server's ServedIclRag (embedder loaded once, vectors in memory)."""
    cls = DECODERS.get(name)
    given = {k: v for k, v in options.items() if cls.takes(k)}
    if name == ServedIclRag.name:
        return ServedIclRag(policy, settings=ServedIclRag.settings_class(**given), support=support)
    return create_decoder(name, policy, support=support, **given)


def _builds_prompt(decoder: Any) -> bool:
    """Whether ``decoder`` overrides ``prepare`` (ICL renders demonstrations into the prompt)."""
    return type(decoder).prepare is not Decoder.prepare
