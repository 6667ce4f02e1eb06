"""Offline token estimates, corrected per model by the counts providers report.

No tokenizer for the hosted models is available offline (tiktoken downloads its
tables on first use), so ``estimate_tokens`` approximates a byte-level BPE
tokenizer (the cl100k / o200k family) from the text's scripts, in one regex pass:

    piece of text                         tokens
    ASCII word ``[A-Za-z]+``              1 per started 5 letters ("the" 1, "conversation" 3)
    digits ``[0-9]+``                     1 per started 3 digits (BPEs split numbers in threes)
    CJK run (Han, kana, Hangul, fullwidth) 1 per character
    other letters (accents, Cyrillic,     1 per started 2 letters
      Greek, Arabic, Devanagari, ...)
    whitespace run                        0 for a single space (it merges into the next
                                          word), else 1 + 1 per 8 characters
    any other character (punctuation,     UTF-8 length - 1, at least 1: ASCII punctuation 1,
      symbols, emoji, joiners)            "…" 2, an emoji 3, so a ZWJ family emoji ~13

It leans towards over-counting English and CJK, which is the safe side for a
budget. On top of the text, every message costs ``MESSAGE_OVERHEAD`` tokens
(role and separators, as in OpenAI's chat format) and a request
``REPLY_PRIMING`` more.

Calibration: after a call, ``observe(model_id, estimated, reported)`` moves that
model's scale factor towards ``reported / estimated`` (an exponential moving
average: up quickly, alpha 0.5, because under-counting overflows a window; down
slowly, alpha 0.2) and clamps it to ``[MIN_SCALE, MAX_SCALE]``. The floor is
deliberately high (0.75): a scale below 1 only buys room, while a wrong one
overflows the window. Reports whose ratio lies outside ``[0.5, 3]`` are ignored
as not describing the same prompt (Ollama's ``prompt_eval_count`` leaves out a
cached prefix; a continuation after a fallback sends a longer prompt).
``calibrated(raw, model_id)`` is the estimate the provider is expected to count.
Unobserved models use 1.0.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable

from .messages import Message

__all__ = [
    "MAX_SCALE",
    "MESSAGE_OVERHEAD",
    "MIN_SCALE",
    "REPLY_PRIMING",
    "TokenCounter",
    "estimate_tokens",
]

MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3
MIN_SCALE = 0.75
MAX_SCALE = 2.0
_PLAUSIBLE = (0.5, 3.0)  # reported / estimated outside this is not the same prompt
_ALPHA_UP = 0.5
_ALPHA_DOWN = 0.2
# Prompts this small are mostly fixed overhead; their ratio says little about the text.
_MIN_OBSERVED = 32

_CJK = (
    "\u1100-\u11ff\u2e80-\u2fdf\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f"
)
_PIECES = re.compile(
    r"(?P<ascii>[A-Za-z]+)"
    r"|(?P<digits>[0-9]+)"
    rf"|(?P<cjk>[{_CJK}]+)"
    rf"|(?P<letters>[^\W\d_{_CJK}]+)"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)",
    re.DOTALL,
)


def estimate_tokens(text: str) -> int:
    """Estimated tokens in ``text`` alone (no message overhead); see the module docstring."""
    total = 0
    for match in _PIECES.finditer(text):
        kind = match.lastgroup
        piece = match.group()
        size = len(piece)
        if kind == "ascii":
            total += (size + 4) // 5
        elif kind == "digits":
            total += (size + 2) // 3
        elif kind == "cjk":
            total += size
        elif kind == "letters":
            total += (size + 1) // 2
        elif kind == "space":
            if piece != " ":
                total += 1 + size // 8
        else:
            total += max(1, len(piece.encode("utf-8", "surrogatepass")) - 1)
    return total


class TokenCounter:
    """Counts messages with an offline estimate and keeps per-model calibration.

    ``estimate`` maps text to tokens (``estimate_tokens`` by default; tests pass
    something simpler). Counts are "raw" (uncalibrated) unless a method says
    otherwise. Thread safe; one instance serves the whole app.
    """

    def __init__(
        self,
        estimate: Callable[[str], int] = estimate_tokens,
        *,
        message_overhead: int = MESSAGE_OVERHEAD,
        reply_priming: int = REPLY_PRIMING,
    ) -> None:
        self._estimate = estimate
        self.message_overhead = message_overhead
        self.reply_priming = reply_priming
        self._scales: dict[str, float] = {}
        self._lock = threading.Lock()

    def text(self, text: str) -> int:
        """Raw tokens of ``text`` alone."""
        return self._estimate(text)

    def message(self, message: Message) -> int:
        """Raw tokens of one message, overhead included."""
        return self._estimate(message.content) + self.message_overhead

    def request(self, messages: Iterable[Message]) -> int:
        """Raw tokens of a whole request, reply priming included."""
        return sum(self.message(m) for m in messages) + self.reply_priming

    def scale(self, model_id: str) -> float:
        """Provider tokens per estimated token for ``model_id`` (1.0 until observed)."""
        return self._scales.get(model_id, 1.0)

    def calibrated(self, raw: int, model_id: str) -> int:
        """``raw`` estimated tokens as ``model_id``'s provider is expected to count them."""
        return math.ceil(raw * self.scale(model_id))

    def observe(self, model_id: str, estimated: int, reported: int) -> float:
        """Correct ``model_id``'s scale with a provider's input-token count; returns the new scale.

        ``estimated`` must be the raw estimate of the same request (what
        ``ContextManager.prepare`` reported as ``PreparedContext.estimated_tokens``).
        Reports for prompts under 32 estimated tokens, non-positive counts and
        implausible ratios (see the module docstring) are ignored.
        """
        if estimated < _MIN_OBSERVED or reported <= 0:
            return self.scale(model_id)
        ratio = reported / estimated
        if not _PLAUSIBLE[0] <= ratio <= _PLAUSIBLE[1]:
            return self.scale(model_id)
        with self._lock:
            current = self._scales.get(model_id, 1.0)
            alpha = _ALPHA_UP if ratio > current else _ALPHA_DOWN
            updated = min(MAX_SCALE, max(MIN_SCALE, current + alpha * (ratio - current)))
            self._scales[model_id] = updated
        return updated
