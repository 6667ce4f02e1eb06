"""Continue: extending the last answer of a chat in place.

The chat's messages (Gradio's shape) are read here: the last user message, the
notes after it and the answer. The notes of one streaming part share an id
prefix (``AnswerView(ids=...)``), so the last part — the first answer or its
latest continuation — is told apart from the parts before it.

An answer is **cut** when its last part was stopped, or carries a failure or
length cut-off note. A stopped part's route note is left "pending" (the last
update the page got); ``settle`` marks it done and "stopped". The browser does
the same at Stop, and decides when Continue shows, with the two scripts below
(the same rules, run on the page's own value: nothing is sent per update).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..render import CUT_TITLES, STOPPED
from .convert import content_text

__all__ = ["CLEAR_JS", "STOP_JS", "VISIBILITY_JS", "LastAnswer", "last_answer", "settle"]

ROUTE_MARKS = ("🤖", "⏩")  # how route notes' titles start (chat.render)

# The browser's side, on the page's own value (nothing is sent per update).
# Stop marks the answer part it stopped (``window.relayStopped``: the last user
# message's index and the part's id prefix) and settles it; updates of that
# part still in flight when Stop was pressed would bring its spinner back, so
# every change of the chat settles a marked part again. Any new stream clears
# the mark (``CLEAR_JS``).
_COMMON_JS = """
  const msgs = history || [];
  let user = -1;
  for (let i = msgs.length - 1; i >= 0; i--) { if (msgs[i] && msgs[i].role === "user") { user = i; break; } }
  const meta = (m) => (m && m.metadata) || {};
  const part = (m) => String(meta(m).id || "").replace(/-[^-]*$/, "");
  const notes = user < 0 ? [] : msgs.slice(user + 1).filter((m) => meta(m).title);
  const last = notes.length ? part(notes[notes.length - 1]) : "note";
  const key = user + "|" + last;
  const settle = () => msgs.map((m, i) => {
    if (i <= user || meta(m).status !== "pending" || part(m) !== last) return m;
    const md = {...meta(m), status: "done"};
    if (md.log || ROUTE.some((r) => String(md.title).startsWith(r))) md.title = md.title + " · " + STOPPED;
    return {...m, metadata: md};
  });
  const cut = (list) => list.slice(user + 1).some((m) => part(m) === last && meta(m).title
    && (String(meta(m).title).includes(STOPPED) || CUT.some((t) => String(meta(m).title).startsWith(t))));
  const pending = notes.some((m) => part(m) === last && meta(m).status === "pending");
"""


def _js(body: str) -> str:
    return ("(history) => {" + _COMMON_JS + body + "}").replace("STOPPED", json.dumps(STOPPED)).replace(
        "ROUTE", json.dumps(list(ROUTE_MARKS))).replace("CUT", json.dumps(list(CUT_TITLES)))


# Stop was pressed: the streaming part is settled ("stopped"), Continue shows.
STOP_JS = _js("""
  if (user < 0) return [{__type__: "update"}, {__type__: "update"}];
  window.relayStopped = key;
  if (!pending) return [{__type__: "update"}, {__type__: "update", visible: cut(msgs)}];
  return [settle(), {__type__: "update", visible: true}];
""")

# The chat changed: settle a stopped part again if a late update un-settled it;
# show Continue when the last answer's last part is cut.
VISIBILITY_JS = _js("""
  if (pending && window.relayStopped === key) return [settle(), {__type__: "update", visible: true}];
  return [{__type__: "update"}, {__type__: "update", visible: user >= 0 && cut(msgs)}];
""")

# A new answer or continuation starts: nothing is stopped.
CLEAR_JS = "() => { window.relayStopped = null; }"


def _metadata(message: Any) -> dict[str, Any]:
    metadata = message.get("metadata") if isinstance(message, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _title(message: Any) -> str:
    return str(_metadata(message).get("title") or "")


@dataclass(frozen=True, slots=True)
class LastAnswer:
    user: int  # index of the last user message
    notes: list[dict[str, Any]]  # the notes after it, in order
    text: str  # the answer so far ("" when it was stopped before any text)

    @property
    def continuations(self) -> int:
        """How many times the answer was continued already (its "⏩" notes)."""
        return sum(1 for note in self.notes if _title(note).startswith("⏩"))

    @property
    def part(self) -> list[dict[str, Any]]:
        """The notes of the last streamed part (sharing the last note's id prefix)."""
        if not self.notes:
            return []
        prefix = _part_of(self.notes[-1])
        start = len(self.notes)
        while start > 0 and _part_of(self.notes[start - 1]) == prefix:
            start -= 1
        return self.notes[start:]


def _part_of(note: dict[str, Any]) -> str:
    return str(_metadata(note).get("id") or "").rpartition("-")[0]


def last_answer(history: Sequence[Any]) -> LastAnswer | None:
    """The last user message's answer, or None when there is no user message."""
    user = next((i for i in range(len(history) - 1, -1, -1)
                 if isinstance(history[i], dict) and history[i].get("role") == "user"), None)
    if user is None:
        return None
    notes: list[dict[str, Any]] = []
    texts: list[str] = []
    for message in history[user + 1:]:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        if _title(message):
            notes.append(message)
        else:
            texts.append(content_text(message.get("content")))
    return LastAnswer(user, notes, "\n\n".join(t for t in texts if t))


def settle(history: Sequence[Any]) -> list[Any] | None:
    """``history`` with a stopped answer's pending notes marked done and its route
    note titled "stopped"; None when nothing was pending."""
    answer = last_answer(history)
    if answer is None or not any(_metadata(n).get("status") == "pending" for n in answer.part):
        return None
    out = list(history)
    for index in range(answer.user + 1, len(out)):
        message = out[index]
        metadata = _metadata(message)
        if metadata.get("status") != "pending":
            continue
        metadata = {**metadata, "status": "done"}
        if metadata.get("log") is not None or str(metadata.get("title", "")).startswith(ROUTE_MARKS):
            metadata["title"] = f"{metadata.get('title', '')} · {STOPPED}"
        out[index] = {**message, "metadata": metadata}
    return out
