"""The seam between an interrupted answer and its continuation: a corpus of
adversarial seams (cut points × continuation styles × languages).

Each case starts from a whole answer ``F`` cut at a point: the user has seen
``F[:cut]``, and a continuing model sends back one of the ways real models
start a continuation (restating the tail as asked, with or without the tags,
restating only the last word, repeating the whole sentence or the whole
answer, re-opening the code block, or just going on as a fresh message). The
seam must turn every one of them into exactly ``F``: no glued words, no
repeated words, no lost characters — also when the continuation arrives a few
characters at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from chat.continuation import CLOSE_TAG, OPEN_TAG, Seam, continue_instruction, restate_tail

EN = (
    "The capital of France is Paris. It is raining today, so the fox jumps over the lazy dog "
    "and runs into the forest where zeta eta theta iota live."
)
ZH = "今天天气很好，我们去公园散步吧。公园里有很多人在跑步，也有人在放风筝。"
JA = "東京は日本の首都です。人口は約千四百万人で、毎年たくさんの観光客が訪れます。"
LIST = "Steps:\n1. Preheat the oven to 200 degrees.\n2. Mix the flour and the sugar.\n3. Bake for 20 minutes.\n"
CODE = "Here is the function:\n```python\ndef add(a, b):\n    return a + b\n\nprint(add(2, 3))\n```\nIt prints 5."


def after(text: str, snippet: str) -> int:
    """The cut right after the first occurrence of ``snippet``."""
    return text.index(snippet) + len(snippet)


# -- continuation styles: (answer, cut) -> what the continuing model sends, or None --


def _tail_start(text: str, cut: int) -> int:
    shown = text[:cut].rstrip()
    return len(shown) - len(restate_tail(text[:cut]))


def compliant(text: str, cut: int) -> str:
    return text[_tail_start(text, cut):]


def compliant_newline(text: str, cut: int) -> str:
    return "\n" + text[_tail_start(text, cut):]


def tagged(text: str, cut: int) -> str:
    start = _tail_start(text, cut)
    tail = restate_tail(text[:cut])
    return OPEN_TAG + tail + CLOSE_TAG + text[start + len(tail):]


def last_word(text: str, cut: int) -> str | None:
    """Restates only the last word (or, without spaces, the last three characters)."""
    shown = text[:cut].rstrip()
    if re.search(r"[\u3040-\u30ff\u4e00-\u9fff。、，]$", shown):
        return text[len(shown) - 3:]
    start = len(shown) - len(re.search(r"\S*$", shown).group(0))
    if len(shown) - start < 2 or start == _tail_start(text, cut):
        return None
    return text[start:]


def sentence(text: str, cut: int) -> str | None:
    """Repeats the whole current sentence or line, then goes on."""
    shown = text[:cut].rstrip()
    starts = [0] + [m.end() for m in re.finditer(r"[.!?。]\s*|\n", shown)]
    start = max(s for s in starts if s < len(shown))
    cjk = bool(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", shown[start:]))
    if len(shown) - start < (2 if cjk else 8) or start == _tail_start(text, cut):
        return None
    return text[start:]


def whole(text: str, cut: int) -> str | None:
    """Starts the whole answer again."""
    return text if len(text[:cut].rstrip()) >= 8 else None


def plain(text: str, cut: int) -> str:
    """A fresh message that just goes on: no leading whitespace."""
    return text[cut:].lstrip()


def refence(text: str, cut: int) -> str:
    """Opens a new code block and restarts the current line."""
    line_start = text.rfind("\n", 0, cut) + 1
    if text[line_start:cut].startswith("```"):
        line_start = cut + 1  # the cut is on the fence line itself: start with the code
    return "```python\n" + text[line_start:]


def refence_block(text: str, cut: int) -> str:
    """Opens a new code block and restarts the code from its first line."""
    return "```python\n" + text[after(text, "```python\n"):]


STYLES: dict[str, Callable[[str, int], str | None]] = {
    "compliant": compliant,
    "compliant-newline": compliant_newline,
    "tagged": tagged,
    "last-word": last_word,
    "sentence": sentence,
    "whole": whole,
    "plain": plain,
    "refence-line": refence,
    "refence-block": refence_block,
}

# (language, answer, cut label, cut, styles that make sense there). A fresh
# message that just goes on ("plain") is ambiguous in the middle of a word in
# general ("Par" + "is." or "Par is."?): it is listed only where a careful
# reader would know, i.e. at word boundaries, after punctuation, without
# spaces (Chinese, Japanese) and for the endings a word-finishing model sends.
COMMON = ("compliant", "compliant-newline", "tagged", "last-word", "sentence", "whole")
CUTS = [
    ("en", EN, "mid-word Par|is", after(EN, "Par"), COMMON),
    ("en", EN, "mid-word rain|ing", after(EN, "rain"), (*COMMON, "plain")),
    ("en", EN, "word end eta| theta", after(EN, "zeta eta"), (*COMMON, "plain")),
    ("en", EN, "after a space", after(EN, "jumps "), (*COMMON, "plain")),
    ("en", EN, "after a full stop", after(EN, "Paris."), (*COMMON, "plain")),
    ("en", EN, "one letter in r|uns", after(EN, "and r"), COMMON),
    ("en", EN, "mid-word for|est", after(EN, "the for"), (*COMMON, "plain")),
    ("zh", ZH, "mid-word 公|园", after(ZH, "我们去公"), (*COMMON, "plain")),
    ("zh", ZH, "after 。", after(ZH, "散步吧。"), (*COMMON, "plain")),
    ("zh", ZH, "mid-clause", after(ZH, "很多人在跑"), (*COMMON, "plain")),
    ("ja", JA, "mid-word 首都で|す", after(JA, "首都で"), (*COMMON, "plain")),
    ("ja", JA, "after 。", after(JA, "です。"), (*COMMON, "plain")),
    ("ja", JA, "mid-verb 訪|れ", after(JA, "観光客が訪"), (*COMMON, "plain")),
    ("list", LIST, "item number 2|.", after(LIST, "degrees.\n2"), (*COMMON, "plain")),
    ("list", LIST, "after 2.", after(LIST, "degrees.\n2."), (*COMMON, "plain")),
    ("list", LIST, "after a newline", after(LIST, "degrees.\n"), (*COMMON, "plain")),
    ("list", LIST, "mid-word flo|ur", after(LIST, "the flo"), COMMON),
    ("list", LIST, "mid-number 2|00", after(LIST, "to 2"), (*COMMON, "plain")),
    ("code", CODE, "mid-keyword ret|urn", after(CODE, "    ret"), (*COMMON, "refence-line", "refence-block")),
    ("code", CODE, "at a line start", after(CODE, "def add(a, b):\n"), ("compliant", "tagged", "whole",
                                                                          "refence-line", "refence-block")),
    ("code", CODE, "mid-call print(ad|d", after(CODE, "print(ad"), (*COMMON, "refence-line", "refence-block")),
    ("code", CODE, "on the fence line", after(CODE, "```python"), ("compliant", "tagged", "whole",
                                                                     "refence-line")),
]

CASES = []
for language, answer, label, cut, styles in CUTS:
    for style in styles:
        continuation = STYLES[style](answer, cut)
        if continuation is not None:
            CASES.append(pytest.param(answer, cut, continuation, id=f"{language}-{label}-{style}"))


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert {c.id.split("-")[0] for c in CASES} == {"en", "zh", "ja", "list", "code"}


def feed_in_pieces(seam: Seam, text: str) -> str:
    """Stream ``text`` through ``seam`` in pieces of 1, 2, 3 and 5 characters."""
    out, i, sizes = [], 0, (1, 2, 3, 5)
    while i < len(text):
        size = sizes[len(out) % len(sizes)]
        out.append(seam.feed(text[i:i + size]))
        i += size
    out.append(seam.flush())
    return "".join(out)


@pytest.mark.parametrize(("answer", "cut", "continuation"), CASES)
def test_the_seam_reads_as_one_answer(answer, cut, continuation):
    shown = answer[:cut]
    whole_at_once = Seam(shown)
    assert shown + whole_at_once.feed(continuation) + whole_at_once.flush() == answer
    assert shown + feed_in_pieces(Seam(shown), continuation) == answer


def test_the_instruction_quotes_the_tail_to_restate():
    assert restate_tail("The capital of France is Par") == "France is Par"
    assert restate_tail("It is raining today.  ") == "is raining today."
    assert restate_tail(ZH[:10]) == ZH[:10]
    assert restate_tail(ZH) == ZH[-10:]
    assert restate_tail("   ") == ""
    instruction = continue_instruction("The capital of France is Par")
    assert instruction.endswith("<tail>France is Par</tail>")
    assert "stay inside that block" in instruction


def test_a_compliant_model_is_recognised():
    seam = Seam("zeta eta")
    assert seam.feed("zeta") == "" and seam.feed(" eta") == ""  # still the restatement
    assert seam.feed(" theta") == " theta"
    assert seam.complied is True
    other = Seam("zeta eta")
    assert other.feed("theta iota") == " theta iota"  # did not comply: the space is put back
    assert other.complied is False


def test_a_genuine_continuation_is_not_held_back():
    seam = Seam("The answer is forty")
    assert seam.feed("-two") == "-two"
    assert seam.feed(" Done") == " Done"
