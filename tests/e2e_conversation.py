"""A scripted conversation partner for end-to-end context tests.

``ConversationWire`` is the wire-protocol server (``tests.wire``) answering the
OpenAI protocol the way a real model would for this purpose:

- an answer request gets a deterministic reply naming the turn (``reply_text``);
- a summary request (recognised by the summarizer's instructions) gets a short
  summary listing every ``TURN-n`` marker from the previous summary and the new
  turns, so what a summary covers can be read back from its text;
- every response reports ``prompt_tokens`` counted with the app's own offline
  estimate, so the app's calibration stays at 1.0 and "the budget" means the
  same thing to the app and to the test. (The wire server's default report,
  the number of words, is ~0.7 of the estimate for English: the app would then
  calibrate down to 0.75 and legitimately send more estimated tokens.)

``conversation_text(k)`` makes the long, distinct user message of turn ``k``.
"""

from __future__ import annotations

import random
import re
from typing import Any

from chat.messages import Message
from chat.summarizer import INSTRUCTIONS
from chat.tokens import TokenCounter
from tests.wire import Script, WireServer
from tests.wire.server import Exchange, Recorded

__all__ = [
    "SUMMARY_PROMPT_PREFIX",
    "ConversationWire",
    "conversation_text",
    "markers",
    "reply_text",
    "split_summary_prompt",
]

SUMMARY_PROMPT_PREFIX = INSTRUCTIONS.split("\n", 1)[0]  # "You maintain the running summary ..."
_MARKER = re.compile(r"\bTURN-(\d+)\b")

_WORDS = (
    "the a of to and in that it is was for on are with as be at by this have from or one had "
    "not but what all were when we there can an your which their said if do will each about "
    "how up out them then she many some so these would other into has more her two like him "
    "see time could no make than first been its who now people my made over did down only way "
    "find use may water long little very after words called just where most know get through "
    "back much before go good new write our used me man too any day same right look think also "
    "around another came come work three word must because does part even place well such here "
    "take why things help put years different away again off went old number great tell men say "
    "small every found still between name should home big give air line set own under read last "
    "never us left end along while might next sound below saw something thought both few those "
    "always looked show large often together asked house world going want school important until "
    "form food keep children feet land side without boy once animals life enough took sometimes "
    "four head above kind began almost live page got earth need far hand high year mother light "
    "parts country father let night following picture being study second eyes soon times story "
    "boys since white days ever paper hard near sentence better best across during today others "
    "however sure means knew its try told young miles sun ways thing whole hear example heard "
    "several change answer room sea against top turned learn point city play toward five using "
    "himself usually money seen car morning plan budget contract deadline invoice supplier meeting"
).split()
_NAMES = ("Alice", "Bruno", "Chen", "Dmitri", "Esther", "Farah", "Gustavo", "Hiroshi", "Ines", "Jonas")


def conversation_text(turn: int, *, min_words: int = 250, max_words: int = 400) -> str:
    """The user message of ``turn``: ~250–400 words of plain English, unique, starting ``TURN-n``."""
    rng = random.Random(f"user-{turn}")
    target = rng.randint(min_words, max_words)
    words = [f"TURN-{turn}:"]
    while len(words) < target:
        sentence = [rng.choice(_WORDS) for _ in range(rng.randint(8, 16))]
        if rng.random() < 0.5:
            sentence.insert(rng.randrange(len(sentence)), rng.choice(_NAMES))
        if rng.random() < 0.3:
            sentence.insert(rng.randrange(len(sentence)), f"{rng.randint(2, 9999):,}")
        sentence[0] = sentence[0].capitalize()
        words.extend(sentence[:-1])
        words.append(sentence[-1] + rng.choice(".....?,;"))
    return " ".join(words)


def reply_text(turn: int) -> str:
    """The assistant's scripted answer to ``turn``: ~60–90 words, naming the turn."""
    rng = random.Random(f"reply-{turn}")
    body = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(60, 90)))
    return f"Reply to TURN-{turn}: {body}."


def markers(text: str) -> list[int]:
    """The turn numbers named in ``text``, in order of appearance."""
    return [int(n) for n in _MARKER.findall(text)]


def split_summary_prompt(body: dict[str, Any]) -> tuple[str, str]:
    """``(previous summary, new turns)`` from a summary request (see ``chat.summarizer.build_prompt``)."""
    user = body["messages"][-1]["content"]
    head, sep, rest = user.partition("\n\nNew turns:\n<<<\n")
    assert sep and head.startswith("Previous summary:\n"), user[:200]
    new_turns, sep, _ = rest.rpartition("\n>>>\n")
    assert sep, user[-200:]
    return head.removeprefix("Previous summary:\n"), new_turns


def is_summary_request(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    return bool(messages) and str(messages[0].get("content", "")).startswith(SUMMARY_PROMPT_PREFIX)


def as_messages(body: dict[str, Any]) -> list[Message]:
    return [Message(m["role"], m["content"]) for m in body["messages"]]


class ConversationWire(WireServer):
    """A ``WireServer`` whose OpenAI answers are scripted from the request itself.

    ``summary_delay``: seconds before each summary token, so the app's
    "Summarizing…" status is on screen long enough to be seen.
    """

    def __init__(self, *, summary_delay: float = 0.0) -> None:
        super().__init__()
        self.summary_delay = summary_delay
        self.counter = TokenCounter()
        self.summaries: list[str] = []  # summary texts returned, in order

    async def _route(self, record: Recorded, ex: Exchange) -> None:
        # A script queued here is the one WireServer plays for this request:
        # nothing awaits between this enqueue and its pop in super()._route.
        if record.method == "POST" and record.path.rstrip("/").endswith("/chat/completions"):
            if isinstance(record.body, dict) and record.body.get("messages"):
                self.enqueue(self._script(record.body))
        await super()._route(record, ex)

    def _script(self, body: dict[str, Any]) -> Script:
        prompt_tokens = self.counter.request(as_messages(body))
        if is_summary_request(body):
            previous, new_turns = split_summary_prompt(body)
            covered = sorted(set(markers(previous)) | set(markers(new_turns)))
            text = (f"Summary {len(self.summaries) + 1}: the user and the assistant discussed "
                    + ", ".join(f"TURN-{n}" for n in covered)
                    + ". Open questions: the budget, the contract and the deadline.")
            self.summaries.append(text)
            tokens = [text[i:i + 12] for i in range(0, len(text), 12)]
            return Script(tokens=tokens, delay=self.summary_delay, usage=(prompt_tokens, len(tokens)))
        last_user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        turn = markers(last_user)[0]
        words = reply_text(turn).split(" ")
        tokens = [words[0]] + [" " + w for w in words[1:]]
        return Script(tokens=tokens, usage=(prompt_tokens, len(tokens)))
