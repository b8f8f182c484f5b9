"""PRISM multi-turn conversations rated by each user (Kirk et al. 2024): loader and builder.

    prefs, skips, source = load_prism("data/prism")   # folder with conversations.jsonl
    prefs, skips, source = load_prism(None)  # hub: HannahRoseKirk/prism-alignment
    prefs[0].id, prefs[0].meta["messages"]
    # ('c0:0:2', [{'role': 'user', 'content': 'What is ...'}])
    BUILDERS.get("prism")(BuildOptions(source="data/prism"), "out/prism")

The user is ``user_id``. At each turn of a conversation the user's message is followed by the
rated model responses, of which the one with ``if_chosen`` true was continued. Each other
response of the turn gives one :class:`Preference`: the prompt is the dialogue up to and including
the user's message at that turn, earlier turns contributing the user's message and the *chosen*
response (:func:`prism_transcript` writes it as ``User: ...`` / ``Assistant: ...``; the same
messages stay in ``meta["messages"]`` for chat templates), ``chosen`` is the chosen response and
``rejected`` the other one. Ids are ``{conversation_id}:{turn}:{within_turn_id of the rejected}``.

A missing field, a wrong type or a repeated conversation raises DataError with file and line (hub:
split and row index). Skipped and counted: a turn without exactly one chosen response or without
exactly one user message (and the later turns of that conversation, whose history is then
unknown), empty texts, identical chosen and rejected texts, a turn with a single response.
PRISM has no per-user gold completions.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

from persalign.data.registry import BUILDERS, BuildOptions, with_defaults
from persalign.data.splits import write_preference_benchmark
from persalign.errors import DataError
from persalign.io import SkipReport, read_jsonl, sha256_file
from persalign.logs import track
from persalign.types import Preference

log = logging.getLogger(__name__)

HUB_ID = "HannahRoseKirk/prism-alignment"
HUB_CONFIG = "conversations"
FILE_NAME = "conversations.jsonl"
PAPER_SHAPE = (1232, 139)  # PRISM in the paper: train users, adaptation users
REQUIRED = ("conversation_id", "user_id", "conversation_history")
TURN_REQUIRED = ("turn", "role", "content")
MODEL_REQUIRED = ("if_chosen", "within_turn_id")
ROLES = {"user": "User", "assistant": "Assistant"}

Where = tuple[str, int]  # (file or hub split, line or row index) for error messages
Message = dict[str, str]


def prism_transcript(messages: list[Message]) -> str:
    """A plain transcript of ``{role, content}`` messages, ending with the assistant's cue."""
    lines = [f"{ROLES[m['role']]}: {m['content']}" for m in messages]
    return "\n\n".join([*lines, "Assistant:"])


def load_prism(
    source: str | Path | None, *, progress: bool = True
) -> tuple[list[Preference], SkipReport, dict[str, Any]]:
    """Preferences, what was skipped, and where they came from (for the manifest).

    ``source``: a folder holding ``conversations.jsonl``, that file itself, or None for the hub.
    """
    skips = SkipReport()
    converter = _Converter(skips)
    if source is None:
        hub_prefs, hub_info = _load_hub(converter, progress=progress)
        return hub_prefs, skips, hub_info
    path = Path(source)
    file = path / FILE_NAME if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"no such file (expected PRISM's {FILE_NAME} or a folder with it)", file)
    prefs: list[Preference] = []
    rows = read_jsonl(file, REQUIRED, kind="conversation", empty_ok=False)
    desc = f"reading {file.name}"
    for line_no, row in track(rows, desc, None, progress):
        prefs += converter.convert(row, (str(file), line_no))
    log.info("PRISM: %d preferences from %d conversations", len(prefs), len(converter.lines))
    info = {"kind": "prism", "path": str(source), "files": [_file_info(file, len(prefs))]}
    return prefs, skips, info


@BUILDERS.register(
    "prism", summary="PRISM conversations: chosen vs. other rated responses per turn"
)
def build_prism(options: BuildOptions, out: str | Path) -> dict[str, Any]:
    """PRISM benchmark: the paper's 1,232 train / 139 adaptation users where the data allows."""
    options = with_defaults(options, min_items=3)  # PRISM users have 3 to 77 pairs
    prefs, skips, source = load_prism(options.source)
    return write_preference_benchmark(
        "prism", prefs, skips, options, out, source=source, paper_shape=PAPER_SHAPE
    )


def _file_info(file: Path, preferences: int) -> dict[str, Any]:
    return {"name": file.name, "sha256": sha256_file(file), "preferences": preferences}


class _Conversation(NamedTuple):
    id: str
    user: str
    type: Any


class _Converter:
    """Turns conversation records into preferences; remembers ids to refuse repeats."""

    def __init__(self, skips: SkipReport):
        self.skips = skips
        self.lines: dict[str, Where] = {}

    def convert(self, row: dict[str, Any], where: Where) -> list[Preference]:
        conv_id = str(row["conversation_id"])
        if conv_id in self.lines:
            first = self.lines[conv_id]
            raise DataError(f"conversation {conv_id!r} repeats (first at line {first[1]})", *where)
        self.lines[conv_id] = where
        turns = _turns(row["conversation_history"], where)
        user = row["user_id"]
        if user is None or not str(user).strip():
            self.skips.add("conversation with an empty user_id", conv_id)
            return []
        conv = _Conversation(conv_id, str(user).strip(), row.get("conversation_type"))
        prefs: list[Preference] = []
        history: list[Message] = []
        for number in sorted(turns):
            user_msgs, responses = turns[number]
            if number == 0 and not user_msgs and isinstance(row.get("opening_prompt"), str):
                user_msgs = [row["opening_prompt"].strip()]
            chosen = [r for r in responses if r["if_chosen"]]
            if len(user_msgs) != 1 or len(chosen) != 1:
                what = "user message" if len(user_msgs) != 1 else "chosen response"
                self.skips.add(f"turn without exactly one {what}", f"{conv_id}:{number}")
                later = sum(1 for t in turns if t > number)
                if later:
                    reason = "turn after an ambiguous turn (history unknown)"
                    self.skips.add(reason, f"{conv_id}:{number + 1}+", count=later)
                break
            messages = [*history, {"role": "user", "content": user_msgs[0]}]
            prefs += self._pairs(conv, number, messages, chosen[0], responses)
            history = [*messages, {"role": "assistant", "content": _content(chosen[0])}]
        return prefs

    def _pairs(
        self,
        conv: _Conversation,
        turn: int,
        messages: list[Message],
        chosen: dict[str, Any],
        responses: list[dict[str, Any]],
    ) -> list[Preference]:
        """One preference per response of ``turn`` other than the chosen one."""
        rejected = [r for r in responses if r is not chosen]
        where_turn = f"{conv.id}:{turn}"
        chosen_text = _content(chosen)
        if not rejected:
            self.skips.add("turn with a single rated response (no pair)", where_turn)
            return []
        if not messages[-1]["content"]:
            self.skips.add("empty user message", where_turn, count=len(rejected))
            return []
        if not chosen_text:
            self.skips.add("empty response text", where_turn, count=len(rejected))
            return []
        prompt = prism_transcript(messages)
        out = []
        for other in rejected:
            pref_id = f"{conv.id}:{turn}:{other['within_turn_id']}"
            text = _content(other)
            if not text:
                self.skips.add("empty response text", pref_id)
                continue
            if text == chosen_text:
                self.skips.add("identical chosen and rejected responses", pref_id)
                continue
            meta = {
                "conversation_id": conv.id,
                "turn": turn,
                "conversation_type": conv.type,
                "scores": {"chosen": chosen.get("score"), "rejected": other.get("score")},
                "models": {"chosen": chosen.get("model_name"), "rejected": other.get("model_name")},
                "messages": messages,
            }
            out.append(
                Preference(
                    id=pref_id,
                    user=conv.user,
                    prompt=prompt,
                    chosen=chosen_text,
                    rejected=text,
                    meta=meta,
                )
            )
        return out


def _content(entry: dict[str, Any]) -> str:
    return (entry["content"] or "").strip()


def _turns(history: Any, where: Where) -> dict[int, tuple[list[str], list[dict[str, Any]]]]:
    """turn -> (user messages, model responses), every entry checked for fields and types."""
    if not isinstance(history, list):
        raise DataError("field 'conversation_history' must be a list of turns", *where)
    turns: dict[int, tuple[list[str], list[dict[str, Any]]]] = defaultdict(lambda: ([], []))
    for i, entry in enumerate(history):
        name = f"conversation_history[{i}]"
        if not isinstance(entry, dict):
            raise DataError(f"{name} must be an object", *where)
        missing = [k for k in TURN_REQUIRED if k not in entry]
        if entry.get("role") == "model":
            missing += [k for k in MODEL_REQUIRED if k not in entry]
        if missing:
            raise DataError(f"{name} is missing field(s): {', '.join(missing)}", *where)
        turn, role, content = entry["turn"], entry["role"], entry["content"]
        if type(turn) is not int or turn < 0:
            raise DataError(f"{name}.turn must be a non-negative integer, got {turn!r}", *where)
        if content is not None and not isinstance(content, str):
            raise DataError(f"{name}.content must be a string", *where)
        if role == "user":
            turns[turn][0].append((content or "").strip())
        elif role == "model":
            if not isinstance(entry["if_chosen"], bool):
                raise DataError(f"{name}.if_chosen must be true or false", *where)
            if any(r["within_turn_id"] == entry["within_turn_id"] for r in turns[turn][1]):
                raise DataError(f"{name}: within_turn_id repeats in turn {turn}", *where)
            turns[turn][1].append(entry)
        else:
            raise DataError(f"{name}.role must be 'user' or 'model', got {role!r}", *where)
    return dict(turns)


def _load_hub(converter: _Converter, *, progress: bool) -> tuple[list[Preference], dict[str, Any]]:
    import datasets  # imported here: only the hub path needs it

    dataset = datasets.load_dataset(HUB_ID, HUB_CONFIG)
    prefs: list[Preference] = []
    rows_per_split = {}
    for split in sorted(dataset):
        name = f"{HUB_ID}[{split}]"
        rows = dataset[split]
        rows_per_split[split] = len(rows)
        for index, row in enumerate(track(rows, f"reading {name}", len(rows), progress)):
            missing = [key for key in REQUIRED if key not in row]
            if missing:
                raise DataError(
                    f"conversation is missing field(s): {', '.join(missing)}", name, index
                )
            prefs += converter.convert(row, (name, index))
    log.info("PRISM: %d preferences from the hub (%s)", len(prefs), HUB_ID)
    return prefs, {"kind": "prism", "hub": HUB_ID, "config": HUB_CONFIG, "rows": rows_per_split}
