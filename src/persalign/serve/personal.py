"""Whose vector guides a request, and onboarding a user with the method's own ``adapt``.

    people = Personalizer(rm, unknown_user="default")
    people.reward_user("alice")        # "alice" when known, else the population's default row
    z = people.adapt("alice", prefs)   # on a copy of rm: any thread; rm is unchanged
    people.install("alice", z)         # on the model thread: used from the next request on
    people.remove("alice")             # deleted: unknown again (model thread)

Every adaptation starts from the trained model's own users (its table as loaded), so a user's
vector depends only on the model and that user's accepted preferences (all of them, in journal
order), never on who was onboarded before: replaying the journal after a restart gives the same
vectors. Unknown users get the method's ``new_user_vector()`` of the loaded model (the train
users' mean for most methods), installed under a reserved id that no valid user id can take,
or a 404, by the server's flag.

``adapt`` works on a copy of the reward model that shares its modules (the frozen backbone and
head) but has its own user table, so it can run beside decoding. A method whose adaptation
changes shared modules while it runs (P-DPO turns the backbone's adapters off for its reference
model) says ``adapts_in_place``; the server then adapts it on the model thread, between steps.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from persalign.serve.schemas import DEFAULT_USER
from persalign.types import Preference

IN_PLACE_METHODS = ("p-dpo",)  # adaptation disables the shared backbone's adapters meanwhile


class UnknownUser(LookupError):
    """A request named a user the server does not know (and unknown users are refused)."""


class Personalizer:
    """The reward model's users, as served (train users, onboarded users, the default)."""

    def __init__(self, rm: Any, unknown_user: str = "default"):
        self.rm = rm
        self.unknown_user = unknown_user
        self.personalized = bool(rm is not None and rm.personalized)
        self.adapts_in_place = getattr(rm, "name", None) in IN_PLACE_METHODS
        self.base_users: list[str] = []
        self.onboarded: dict[str, torch.Tensor | None] = {}
        if self.personalized:
            self.base_users = sorted(rm.user_ids, key=rm.user_ids.__getitem__)
            self.base_table = rm.user_table.detach().clone()  # [U, D]
            self.default = rm.new_user_vector().detach().clone()  # [D]
            rm.add_user(DEFAULT_USER, self.default)

    def known(self, user: str | None) -> bool:
        return user is not None and (user in self.onboarded or user in self.base_users)

    def reward_user(self, user: str | None) -> str:
        """The reward model's id for ``user``; raises UnknownUser when unknown ones are refused."""
        if self.known(user):
            return user if self.personalized else DEFAULT_USER
        if self.unknown_user == "404":
            raise UnknownUser(
                f"unknown user {user!r}: onboard them with POST /v1/users/{{id}}/preferences"
            )
        return DEFAULT_USER

    def fork(self) -> Any:
        """A copy of the reward model sharing its modules, with the trained users only."""
        rm = self.rm
        clone = copy.copy(rm)
        for name in ("_parameters", "_buffers", "_modules"):  # own dicts: setattr stays local
            object.__setattr__(clone, name, dict(getattr(rm, name)))
        clone.set_users(self.base_users, self.base_table)
        return clone

    def adapt(self, user: str, prefs: Sequence[Preference]) -> torch.Tensor | None:
        """``user``'s vector adapted from ``prefs``, starting from the trained users only.
        On a fork (any thread), or in place on the model thread when ``adapts_in_place``."""
        if not self.personalized:
            return None
        if not self.adapts_in_place:
            clone = self.fork()
            clone.adapt(user, list(prefs))
            return clone.user_table[clone.user_ids[user]].detach().clone()
        rm = self.rm
        ids = sorted(rm.user_ids, key=rm.user_ids.__getitem__)
        table = rm.user_table.detach().clone()
        rm.set_users(self.base_users, self.base_table)
        try:
            rm.adapt(user, list(prefs))
            return rm.user_table[rm.user_ids[user]].detach().clone()
        finally:
            rm.set_users(ids, table)

    def install(self, user: str, vector: torch.Tensor | None) -> None:
        """Serve ``vector`` for ``user`` from now on (model thread)."""
        self.onboarded[user] = vector
        if self.personalized and vector is not None:
            self.rm.add_user(user, vector)

    def remove(self, user: str) -> None:
        """Stop serving ``user``'s onboarded vector (model thread): a trained user gets their
        trained vector back, anyone else leaves the table (unknown from now on)."""
        self.onboarded.pop(user, None)
        if not self.personalized or user not in self.rm.user_ids:
            return
        if user in self.base_users:
            self.rm.add_user(user, self.base_vector(user))
            return
        ids = sorted(self.rm.user_ids, key=self.rm.user_ids.__getitem__)
        keep = [i for i, u in enumerate(ids) if u != user]
        self.rm.set_users([ids[i] for i in keep], self.rm.user_table.detach()[keep])

    def base_vector(self, user: str) -> torch.Tensor | None:
        """A trained user's vector, from the table as loaded (None for global methods)."""
        if not self.personalized:
            return None
        return self.base_table[self.base_users.index(user)]

    def default_vector(self) -> torch.Tensor | None:
        """The vector unknown users get (None for global methods)."""
        return self.default if self.personalized else None
