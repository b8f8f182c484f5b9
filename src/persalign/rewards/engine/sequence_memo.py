"""A reward model's whole-response rewards, remembered while it is evaluated and cannot change.

    remember_sequences(rm)                       # a cell: rm is loaded and will not be trained
    rm.prefix_rewards(prompts, responses, users) # records each response's last prefix reward
    rm.sequence_rewards(prompts, responses, users)   # known ones read, only the rest computed
    forget_sequences(rm)                         # fit and adapt do: rewards change

    @forgetting                                  # RewardModel wraps every fit and adapt so
    def adapt(self, user, support): ...          # (a method's own too)

A cell's metrics score overlapping texts with the same reward model: policy accuracy's reward
pass covers the query pairs, steering accuracy the user's own text (on a sim benchmark one of
the pair) and the zero-shot output, the win rate the zero-shot output again, true RM accuracy the
query pairs again. For a reward model whose backbone is not frozen (GenARM's and P-DPO's LoRA
likelihoods, a LoRA backbone), each of those is a full pass of the model. Once
``remember_sequences`` is on, every ``prefix_rewards`` call records r(x, y) (the last prefix
reward, what ``sequence_rewards`` returns) per (prompt, response, user), and ``sequence_rewards``
computes only the texts it has not seen. A value read back equals the one computed up to float
rounding between batches of different padding (about 1e-6), as any two batchings do.

It is off unless a caller turns it on (``runs.cells.evaluate_cell`` does, for the model it
loaded), and every ``fit`` and ``adapt`` forgets it first, since they change what r is:
``RewardModel`` wraps its own and, in ``__init_subclass__``, any a method defines
(``forgetting``), so a new method cannot forget to.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch

MEMO = "_sequence_memo"  # the attribute that holds a model's memo (absent: off)
Key = tuple[str, str, str]  # (prompt, response, user)


def remember_sequences(rm) -> None:
    """Turn the memo on for ``rm`` (kept if it is on already)."""
    if getattr(rm, MEMO, None) is None:
        object.__setattr__(rm, MEMO, {})  # a plain attribute, never an nn.Module buffer


def forget_sequences(rm) -> None:
    """Turn the memo off and drop what it held (``rm``'s rewards are about to change)."""
    object.__setattr__(rm, MEMO, None)


def forgetting(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (a reward model's fit or adapt) with the memo forgotten before it runs."""
    if getattr(method, "forgets_sequences", False):
        return method

    @functools.wraps(method)
    def wrapper(rm, *args: Any, **kwargs: Any) -> Any:
        forget_sequences(rm)
        return method(rm, *args, **kwargs)

    wrapper.forgets_sequences = True  # type: ignore[attr-defined]
    return wrapper


def record(
    rm,
    prompts: Sequence[str],
    responses: Sequence[str],
    users: Sequence[str],
    last: torch.Tensor,  # [N] each response's last prefix reward
) -> None:
    """Remember ``last`` per (prompt, response, user) when the memo is on."""
    memo: dict[Key, float] | None = getattr(rm, MEMO, None)
    if memo is None:
        return
    for key, value in zip(zip(prompts, responses, users, strict=True), last.tolist(), strict=True):
        memo[key] = float(value)


def sequence_rewards(
    rm,
    prompts: Sequence[str],
    responses: Sequence[str],
    users: Sequence[str],
    compute: Callable[[list[str], list[str], list[str]], torch.Tensor],
) -> torch.Tensor:
    """[N] r(x, y) of each response: ``compute(prompts, responses, users)`` ([n] last prefix
    rewards) for those the memo does not hold (each distinct one once), the rest read back."""
    memo: dict[Key, float] | None = getattr(rm, MEMO, None)
    if memo is None:
        return compute(list(prompts), list(responses), list(users))
    keys = list(zip(prompts, responses, users, strict=True))
    todo = list(dict.fromkeys(k for k in keys if k not in memo))
    dtype = torch.float32
    if todo:
        fresh = compute([k[0] for k in todo], [k[1] for k in todo], [k[2] for k in todo])
        dtype = fresh.dtype
        record(rm, *zip(*todo, strict=True), fresh.cpu())
    return torch.tensor([memo[k] for k in keys], dtype=dtype)
