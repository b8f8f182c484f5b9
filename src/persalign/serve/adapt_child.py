"""The adaptation child (serve.adapt_process starts it): one JSON line in, one out.

    python -m persalign.serve.adapt_child REWARD_DIR '{"device": "cpu"}'

It loads the reward model, puts itself in the idle scheduling class with one torch thread, and
answers each request line (``{"user", "preferences": [[prompt, chosen, rejected, id], ...]}``)
with ``{"vector": [...] | null}`` or ``{"error": "..."}``. Only the answers go to its stdout;
anything else printed goes to stderr (the server's log). It is its own module so that running
it does not import the server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from typing import Any

import torch

from persalign.rewards import load
from persalign.serve.personal import Personalizer
from persalign.types import Preference

log = logging.getLogger(__name__)


def _idle_priority() -> str:
    """Put this process in the idle scheduling class, else at nice 19; say which."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "SCHED_IDLE"
    except (AttributeError, OSError):
        with contextlib.suppress(AttributeError, OSError):
            os.nice(19)
        return "nice 19"


def serve_child(reward_dir: str, overrides: dict[str, Any]) -> None:
    """The child's loop: load the reward model, then answer one JSON line per request."""
    answers = os.fdopen(os.dup(1), "w")  # the answers only: anything else printed goes to
    os.dup2(2, 1)  # stderr (the server's log), never into the protocol
    sys.stdout = sys.stderr
    priority = _idle_priority()
    torch.set_num_threads(1)
    people = Personalizer(load(reward_dir, **overrides), "default")
    log.info("adaptation process ready (%s, 1 thread): %s", priority, reward_dir)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            prefs = [
                Preference(pid, request["user"], prompt, chosen, rejected)
                for prompt, chosen, rejected, pid in request["preferences"]
            ]
            vector = people.adapt(request["user"], prefs)
            answer = {"vector": None if vector is None else vector.tolist()}
        except Exception as exc:  # reported to the server, which answers the request
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    from persalign.logs import setup_logging

    setup_logging(0)
    serve_child(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
