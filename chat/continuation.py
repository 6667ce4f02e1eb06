"""Mid-stream recovery: asking another model to continue an answer, and the seam.

When a stream fails after some text, the next model receives the original
messages, then an assistant message holding all the text shown so far, then a
user message asking it to continue exactly where that text stops (assistant
prefill is not portable across providers, so this is the common form).

Models sometimes start a continuation by repeating the last words they were
given. ``Seam`` holds back the start of the continuation just long enough to
see whether it repeats the tail of the shown text, and cuts the repeat:
nothing is shown twice. An overlap counts as a repeat when it is at least
``MIN_OVERLAP`` characters long, or when it is made of whole words (so
"... France is" + "is Paris." becomes "... France is Paris.").
"""

from __future__ import annotations

from collections.abc import Sequence

from .messages import Message

__all__ = ["CONTINUE_INSTRUCTION", "MIN_OVERLAP", "Seam", "continuation_messages", "strip_overlap"]

CONTINUE_INSTRUCTION = (
    "Your previous reply was cut off. Continue it exactly from where the text stops, "
    "as if you had never been interrupted: do not repeat anything already written and "
    "add no preamble or comment. If it stops mid-word or mid-sentence, finish that word "
    "or sentence first."
)
MIN_OVERLAP = 8
LOOKAHEAD = 4000  # never hold back more than this many characters


def continuation_messages(messages: Sequence[Message], shown: str) -> tuple[Message, ...]:
    """The request that asks a model to continue ``shown`` (the whole answer so far)."""
    return (*messages, Message("assistant", shown), Message("user", CONTINUE_INSTRUCTION))


def strip_overlap(shown: str, continuation: str) -> str:
    """``continuation`` without a leading repeat of the end of ``shown``."""
    tail = shown.rstrip()
    body = continuation.lstrip()
    for k in range(min(len(tail), len(body)), 1, -1):
        if tail.endswith(body[:k]) and _is_repeat(tail, body, k):
            rest = body[k:]
            # ``shown`` already ends with the whitespace the repeat was followed by.
            return rest.lstrip() if tail != shown else rest
    return continuation


def _is_repeat(tail: str, body: str, k: int) -> bool:
    if k >= MIN_OVERLAP:
        return True
    starts_word = k == len(tail) or not tail[-k - 1].isalnum()
    ends_word = k == len(body) or not body[k].isalnum()
    return starts_word and ends_word and body[0].isalnum()


class Seam:
    """Feeds a continuation through, cutting any repeat of ``shown`` at its start.

    ``feed`` returns the text to show now (possibly empty while deciding);
    ``flush`` ends the deciding phase (call it when the stream ends or fails).
    """

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self._buffer = ""
        self._deciding = True

    def feed(self, text: str) -> str:
        if not self._deciding:
            return text
        self._buffer += text
        head = self._buffer.lstrip()
        # A longer repeat is still possible only while what we hold occurs in
        # the shown text; a genuine continuation stops matching within a few words.
        if len(head) < LOOKAHEAD and (not head or head in self.shown):
            return ""
        return self.flush()

    def flush(self) -> str:
        if not self._deciding:
            return ""
        self._deciding = False
        text, self._buffer = self._buffer, ""
        return strip_overlap(self.shown, text) if text else ""
