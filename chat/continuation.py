"""Mid-stream recovery: asking another model to continue an answer, and the seam.

When a stream fails after some text, the next model receives the original
messages, then an assistant message holding all the text shown so far, then a
user message asking it to continue exactly where that text stops (assistant
prefill is not portable across providers, so this is the common form).

A continuation comes back as a fresh message: it never starts with the space
that separated the next word, and models like to repeat what they were given.
So the request asks the model to **begin by restating the last few words**
(``restate_tail``, quoted in the instruction between ``<tail>`` tags) and then
carry straight on. ``Seam`` cuts that restatement deterministically: whatever
follows it (a space, a newline, the rest of a word cut in the middle) is
exactly how the answer goes on, in any language.

For a model that does not comply, the old heuristics apply (``strip_overlap``):
a repeat of the end of the shown text is cut when it is at least
``MIN_OVERLAP`` characters long, made of whole words, or two or more CJK
characters; a restated word cut in the middle ("rain" + "raining") is
completed; a fence that re-opens a code block the text is already inside is
dropped; and when nothing was repeated, a space is put back between two words
that would otherwise be glued ("eta" + "theta"), unless the continuation
obviously finishes the word (a common suffix such as "ing").

``Seam`` holds back the start of the continuation only while it could still
be a restatement or a repeat; then everything streams through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .messages import Message

__all__ = [
    "CONTINUE_INSTRUCTION",
    "MIN_OVERLAP",
    "Seam",
    "continue_instruction",
    "continuation_messages",
    "restate_tail",
    "strip_overlap",
]

CONTINUE_INSTRUCTION = (
    "Your previous reply was cut off. Continue it exactly where it stops. Begin your reply "
    "with the exact text between <tail> and </tail> below (how the cut-off reply ends), copied "
    "character for character even if it stops in the middle of a word, then carry straight on. "
    "Add no preamble or comment and repeat nothing else. Keep the same language and formatting; "
    "if it stops inside a code block, stay inside that block (do not open a new one).\n"
    "<tail>{tail}</tail>"
)
MIN_OVERLAP = 8
LOOKAHEAD = 4000  # never hold back more than this many characters
TAIL_WORDS = 3  # the restated tail: at most this many words ...
TAIL_CHARS = 40  # ... within this many characters
TAIL_RUN = 10  # characters of a tail with no space in it (Chinese, Japanese, a long token)
OPEN_TAG, CLOSE_TAG = "<tail>", "</tail>"

# Endings a non-compliant model writes when it finishes a word cut in the
# middle ("It is rain" + "ing"): glued on, not spaced. Anything else that
# starts with a letter after a letter is taken to be the next word.
_SUFFIXES = frozenset(
    "s es ed d ing ings er ers est ly ion ions tion tions sion ment ments ness ful less able ible "
    "al ally ive ous ity ize ise ized ised izes ises".split()
)
_WORD = re.compile(r"\S+")
_LEADING_LETTERS = re.compile(r"[^\W\d_]+")


def restate_tail(shown: str) -> str:
    """The end of ``shown`` the continuing model is asked to restate.

    The last ``TAIL_WORDS`` words (the last one possibly cut mid-word) within
    ``TAIL_CHARS`` characters, without trailing whitespace; for text without
    spaces (Chinese, Japanese), its last ``TAIL_RUN`` characters.
    """
    text = shown.rstrip()
    if not text:
        return ""
    window = text[-TAIL_CHARS:]
    starts = [m.start() for m in _WORD.finditer(window)]
    if len(window) < len(text) and not text[-len(window) - 1].isspace() and starts and starts[0] == 0:
        starts = starts[1:]  # the window begins inside a word: not a place to start
    if not starts:
        return window[-TAIL_RUN:]
    tail = window[starts[-TAIL_WORDS] if len(starts) >= TAIL_WORDS else starts[0]:]
    if len(starts) == 1 and len(tail) > TAIL_RUN and not any(c.isspace() for c in tail):
        tail = tail[-TAIL_RUN:]
    return tail


def continue_instruction(shown: str) -> str:
    """The user message that asks a model to continue ``shown``."""
    return CONTINUE_INSTRUCTION.format(tail=restate_tail(shown))


def continuation_messages(messages: Sequence[Message], shown: str) -> tuple[Message, ...]:
    """The request that asks a model to continue ``shown`` (the whole answer so far)."""
    return (*messages, Message("assistant", shown), Message("user", continue_instruction(shown)))


# -- heuristics (models that do not restate the tail) -----------------------------------


def strip_overlap(shown: str, continuation: str) -> str:
    """``continuation`` without a leading repeat of the end of ``shown``.

    When nothing is cut, a space is put back between two words the seam would
    otherwise glue together (see the module docstring).
    """
    tail = shown.rstrip()
    body = continuation.lstrip()
    for k in range(min(len(tail), len(body)), 0, -1):
        if tail.endswith(body[:k]) and _is_repeat(tail, body, k):
            return _after_restatement(shown, body[k:])
    fragment = _last_fragment(tail)
    if fragment and body.startswith(fragment) and len(body) > len(fragment) and body[len(fragment)].isalnum():
        return body[len(fragment):]  # "It is rain" + "raining": the word, restated and finished
    return _glue(shown, continuation)


def _is_repeat(tail: str, body: str, k: int) -> bool:
    if k >= MIN_OVERLAP:
        return True
    if k >= 2 and any(_is_cjk(c) for c in body[:k]):
        return True  # two or more Chinese/Japanese characters repeated at a seam
    if k < 2 and not body[0].isdigit():
        return False
    starts_word = k == len(tail) or not tail[-k - 1].isalnum()
    ends_word = k == len(body) or not body[k].isalnum()
    return starts_word and ends_word and body[0].isalnum()


def _last_fragment(tail: str) -> str:
    """The last run of non-space characters, when it may be a word cut in the middle."""
    if not tail or not tail[-1].isalnum() or _is_cjk(tail[-1]):
        return ""
    match = re.search(r"\S+$", tail)
    fragment = match.group(0) if match else ""
    return fragment if len(fragment) >= 2 else ""


def _glue(shown: str, continuation: str) -> str:
    if not shown or not continuation or shown[-1].isspace() or continuation[0].isspace():
        return continuation
    if _inside_code_block(shown):
        return continuation  # code is spacing-sensitive: never guess there
    a, b = shown[-1], continuation[0]
    if _is_cjk(a) or _is_cjk(b) or not _is_latin(b):
        return continuation
    if _is_latin(a):
        word = _LEADING_LETTERS.match(continuation)
        if word and word.group(0).islower() and word.group(0) in _SUFFIXES:
            return continuation
        if a.isdigit() and b.isdigit():
            return continuation
        return " " + continuation
    if a in ".!?,;:)]" and b.isalpha():
        return " " + continuation
    return continuation


def _after_restatement(shown: str, rest: str) -> str:
    """``rest`` without the whitespace ``shown`` already ends with."""
    trailing = shown[len(shown.rstrip()):]
    if not trailing:
        return rest
    lead = rest[: len(rest) - len(rest.lstrip())]
    if lead.startswith(trailing):
        return rest[len(trailing):]
    if trailing.startswith(lead):
        return rest[len(lead):]
    return rest


def _inside_code_block(text: str) -> bool:
    """Whether ``text`` ends inside an open fenced code block."""
    fences = 0
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fences += 1
    return fences % 2 == 1


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF  # hiragana, katakana
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF  # CJK ideographs
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
        or 0x3000 <= code <= 0x303F  # CJK punctuation
        or 0xAC00 <= code <= 0xD7AF  # Hangul
    )


def _is_latin(char: str) -> bool:
    return char.isascii() and char.isalnum() or ("\u00c0" <= char <= "\u024f" and char.isalpha())


# -- the seam ---------------------------------------------------------------------------


class Seam:
    """Feeds a continuation through, cutting the restated tail or a repeat at its start.

    ``feed`` returns the text to show now (possibly empty while deciding);
    ``flush`` ends the deciding phase (call it when the stream ends or fails).
    ``complied`` tells, once decided, whether the model restated the tail as asked.
    """

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self.tail = restate_tail(shown)
        self.complied: bool | None = None
        self._in_code = _inside_code_block(shown)
        self._buffer = ""
        self._deciding = True

    def feed(self, text: str) -> str:
        if not self._deciding:
            return text
        self._buffer += text
        if len(self._buffer) < LOOKAHEAD and self._undecided():
            return ""
        return self.flush()

    def flush(self) -> str:
        if not self._deciding:
            return ""
        self._deciding = False
        text, self._buffer = self._buffer, ""
        return self._cut(text) if text else ""

    # -- deciding --

    def _body(self, text: str) -> tuple[str, bool] | None:
        """The continuation past a re-opened code fence, and whether one was dropped;
        None while the fence line is still incomplete."""
        stripped = text.lstrip()
        if self._in_code and stripped.startswith(("```", "~~~")):
            newline = stripped.find("\n")
            if newline < 0:
                return None
            return stripped[newline + 1:], True
        if self._in_code and stripped in ("`", "``", "~", "~~"):
            return None
        return text, False

    def _undecided(self) -> bool:
        found = self._body(self._buffer)
        if found is None:
            return True
        head = found[0].lstrip()
        if not head:
            return True
        if self.tail:
            restated = head[len(OPEN_TAG):] if head.startswith(OPEN_TAG) else head
            if OPEN_TAG.startswith(head) or self.tail.startswith(restated):
                return True  # may still be the restatement we asked for
            if restated.startswith(self.tail):
                after = restated[len(self.tail):]
                if after and len(after) < len(CLOSE_TAG) and CLOSE_TAG.startswith(after):
                    return True  # the restatement, then maybe its closing tag
                if after.startswith(CLOSE_TAG):
                    after = after[len(CLOSE_TAG):]
                # Whitespace right after the restatement may repeat what the
                # shown text ends with: wait for the first visible character.
                return not after.strip()
        # A longer repeat is still possible only while what we hold occurs in
        # the shown text; a genuine continuation stops matching within a few words.
        return head in self.shown

    def _cut(self, text: str) -> str:
        found = self._body(text)
        if found is None:
            return ""  # only a fence: nothing to show
        body, refenced = found
        head = body.lstrip()
        if head.startswith(OPEN_TAG):
            head = head[len(OPEN_TAG):]
        if self.tail and head.startswith(self.tail):
            self.complied = True
            rest = head[len(self.tail):]
            if rest.startswith(CLOSE_TAG):
                rest = rest[len(CLOSE_TAG):]
            return _after_restatement(self.shown, rest)
        self.complied = False
        out = strip_overlap(self.shown, body)
        last_line = self.shown.rsplit("\n", 1)[-1].lstrip()
        if refenced and out == body and last_line.startswith(("```", "~~~")):
            out = "\n" + out  # the shown text ends with the fence line itself
        return out
