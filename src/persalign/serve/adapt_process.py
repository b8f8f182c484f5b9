"""Adaptation in a child process at idle CPU priority, so onboarding never stalls decoding.

    adapter = AdaptProcess("runs/lore", {"device": "cpu"})   # the child loads its own copy
    vector = adapter.adapt("alice", prefs)                    # blocks the calling thread only
    adapter.close()

In the serving process, a thread that adapts competes with the decoding thread for the GIL
(each of its small tensor ops takes it back) and for the cores. On a 2-core laptop, throughput
at concurrency 8 while a user onboarded every second was 0.75x the throughput without
onboarding; with the child it was 0.93 to 1.02x (benchmarks/bench_serve.py). The child
(``python -m persalign.serve.adapt_child REWARD_DIR``) holds its own reward model, runs one
torch thread in the idle scheduling class (``SCHED_IDLE``: it runs only on a core that would
otherwise be idle, and yields at once when decoding wakes; ``nice 19`` where that class is not
available), and shares no lock with the server.

Requests and answers are JSON lines on the child's stdin and stdout (no pickle): ``{"user",
"preferences": [[prompt, chosen, rejected, id], ...]}`` in, ``{"vector": [...] | null}`` or
``{"error": "..."}`` out. One adaptation at a time (the onboarder's single worker). Every
adaptation starts from the trained users (``Personalizer.adapt``), as in the server, so
the child's vector equals an in-process adaptation's (tests/unit/test_serve_adapt_process.py).
A child found dead before a request is started again first; one that dies during a request
fails that onboarding with an error naming the user instead of hanging, and is started again
for the next.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from persalign.errors import PersalignError
from persalign.types import Preference

log = logging.getLogger(__name__)


class AdaptProcessError(PersalignError):
    """The adaptation child failed or died."""


class AdaptProcess:
    """One child process that adapts users' vectors (module doc)."""

    def __init__(self, reward_dir: str | Path, overrides: dict[str, Any] | None = None):
        self.reward_dir, self.overrides = Path(reward_dir), dict(overrides or {})
        self._lock = threading.Lock()
        self._child: subprocess.Popen | None = None
        self._start()

    def _start(self) -> None:
        command = [sys.executable, "-m", "persalign.serve.adapt_child", str(self.reward_dir)]
        command += [json.dumps(self.overrides)]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self._child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
        )  # its stderr is the server's: the child's log lines show in the server's log

    def adapt(self, user: str, prefs: Sequence[Preference]) -> torch.Tensor | None:
        """``user``'s vector from ``prefs`` (starting from the trained users), in the child."""
        request = {
            "user": user,
            "preferences": [[p.prompt, p.chosen, p.rejected, p.id] for p in prefs],
        }
        with self._lock:
            if self._child is None or self._child.poll() is not None:
                self._start()
            child = self._child
            try:
                child.stdin.write(json.dumps(request) + "\n")
                child.stdin.flush()
                line = child.stdout.readline()
            except (BrokenPipeError, OSError) as exc:
                line = ""
                log.warning("the adaptation process: %s", exc)
            if not line:
                try:
                    code = child.wait(5)
                except subprocess.TimeoutExpired:
                    child.kill()
                    code = child.wait()
                self._child = None
                raise AdaptProcessError(
                    f"the adaptation process exited (code {code}) while adapting {user!r} "
                    "(its error is in the server's log); it is started again on the next "
                    "onboarding"
                )
        answer = json.loads(line)
        if "error" in answer:
            raise AdaptProcessError(f"adapting {user!r}: {answer['error']}")
        vector = answer["vector"]
        return None if vector is None else torch.tensor(vector, dtype=torch.float32)

    def close(self) -> None:
        with self._lock:
            child, self._child = self._child, None
        if child is None:
            return
        with contextlib.suppress(OSError):
            child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
