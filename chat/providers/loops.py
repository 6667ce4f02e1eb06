"""Ending an answer that started repeating itself.

A small model at a modest repetition penalty can still fall into a loop: the
same line, sentence or list item again and again until the output cap. The
``LoopGuard`` watches the text as it streams, cut into segments at line ends
and sentence ends. A substantial segment (``min_chars`` or more, compared
without list markers and extra spaces) written ``repeats`` times is a loop:
that last copy is never shown and the stream ends. While the segment being
written could still become such a copy, it is held back, so the user never
sees a line three times.

A loop with no line or sentence end (a run of emoji, a phrase over and over)
is caught too: text ending with the same block of ``block_min``–``block_max``
characters (of some variety) three times in a row ends the stream.
"""

from __future__ import annotations

import re
from collections import Counter

__all__ = ["LoopGuard"]

_MARKER = re.compile(r"^(?:[-*•+]|\d+[.)]|#+)\s+")
_SPACES = re.compile(r"\s+")
_MARKER_START = re.compile(r"[-*•+]|\d+[.)]?|#+")


def _normal(segment: str) -> str:
    return _SPACES.sub(" ", _MARKER.sub("", segment.strip())).strip().lower()


class LoopGuard:
    """``feed`` text in, get the text to show; ``looping`` turns true at a loop.

    Call ``flush`` when the stream ends normally to get what was held back.
    """

    def __init__(self, repeats: int = 3, min_chars: int = 16, block_min: int = 10, block_max: int = 256) -> None:
        self.repeats = repeats
        self.min_chars = min_chars
        self.block_min, self.block_max = block_min, block_max
        self.looping = False
        self._recent = ""  # the last characters fed, for blocks repeated back to back
        self._since_check = 0
        self._counts: Counter[str] = Counter()
        self._suspects: set[str] = set()  # segments one copy away from a loop
        self._segment = ""  # the segment being written
        self._held = ""  # its end, not shown yet

    def feed(self, text: str) -> str:
        if self.looping:
            return ""
        out: list[str] = []
        for char in text:
            previous = self._segment[-1:] if self._segment else ""
            self._segment += char
            self._held += char
            if char == "\n" or (char.isspace() and previous in (".", "!", "?")):
                segment, self._segment = self._segment, ""
                if self._complete(segment):
                    self.looping = True
                    return "".join(out)  # the repeated copy (held) is dropped
                out.append(self._held)
                self._held = ""
            elif not self._may_repeat():
                out.append(self._held)
                self._held = ""
        self._recent = (self._recent + text)[-self.repeats * self.block_max:]
        self._since_check += len(text)
        if self._since_check >= 8:
            self._since_check = 0
            if self._repeated_block():
                self.looping = True
                return ""
        return "".join(out)

    def _repeated_block(self) -> bool:
        recent, n = self._recent, self.repeats
        last = recent[-1:]
        for size in range(self.block_min, min(self.block_max, len(recent) // n) + 1):
            if n > 1 and recent[-1 - size] != last:
                continue  # a block repeated back to back ends like the copy before it
            block = recent[-size:]
            if recent.endswith(block * n) and len(set(block)) >= 4:
                return True
        return False

    def flush(self) -> str:
        """What was held back, at the normal end of the stream."""
        if self.looping:
            return ""
        if self._segment and self._complete(self._segment):
            self.looping = True
            return ""
        held, self._held, self._segment = self._held, "", ""
        return held

    def _complete(self, segment: str) -> bool:
        """Count a finished segment; True when it makes a loop."""
        key = _normal(segment)
        if len(key) < self.min_chars:
            return False
        self._counts[key] += 1
        if self._counts[key] >= self.repeats:
            return True
        if self._counts[key] == self.repeats - 1:
            self._suspects.add(key)
        return False

    def _may_repeat(self) -> bool:
        if not self._suspects:
            return False
        start = _normal(self._segment)
        if not start or _MARKER_START.fullmatch(start):
            return True  # only spaces or (the start of) a list marker so far
        return any(suspect.startswith(start) for suspect in self._suspects)
