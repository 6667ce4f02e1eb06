"""Auto's tier heuristic: which tier a prompt needs, decided locally in well under a millisecond.

Policy (first match wins):

premium
    the prompt asks for real reasoning: two or more distinct reasoning cues
    ("step by step", "prove", "analyze", "compare", "trade-offs", "derive", ...),
    or one reasoning cue together with code, maths or a multi-step list,
    or it is very long (over ``PREMIUM_CHARS`` characters).
standard
    one reasoning cue, code (a fenced block, code syntax or a programming
    request), maths, a list of three or more items (numbered or bulleted), a
    request for an explanation ("how does", "difference between", ...) or a
    piece of writing (an essay, a letter, a report...), or a prompt over
    ``STANDARD_CHARS`` characters.
fast
    everything else: short questions, chit-chat, lookups, short poems, quick
    rewrites.

No model is called. Only the first ``HEAD`` and last ``TAIL`` characters are
scanned for cues (the question usually sits at one end of a long paste), so
the cost stays bounded whatever the prompt length; length itself is counted
on the whole prompt. ``classify`` returns the tier and the reason in plain
words, which the UI shows next to the answer.
"""

from __future__ import annotations

import re

__all__ = ["classify"]

FAST, STANDARD, PREMIUM = "fast", "standard", "premium"
STANDARD_CHARS = 700
PREMIUM_CHARS = 9000
HEAD, TAIL = 2000, 1000

_WORD = re.compile(r"[a-z][a-z+#]*")
_REASONING_WORDS = frozenset(
    "prove proof derive derivation analyze analyse analysis compare comparison contrast "
    "tradeoff tradeoffs evaluate critique justify architecture optimize optimise strategy "
    "implications".split()
)
_REASONING_PHRASES = (
    " step by step", " step-by-step", " trade-off", " pros and cons", " reason through",
    " think through", " explain why", " in depth", " in detail", " root cause",
    " what would happen if", " design a ", " design an ", " plan a ", " plan for ", " plan out ",
)
_REASONING_PHRASES += (" should i use ", " which is better", " which one should")
# Asking for an explanation or a piece of writing: worth more than the fast
# tier, but not by itself a reason for premium.
_EXPLAIN_PHRASES = (
    " explain how", " explain what", " explain the", " how does", " why does", " why do ",
    " difference between", " walk me through",
)
_WRITING = re.compile(
    r"(?:write|draft|compose) (?:a|an|the|my|me a|me an) (?:[a-z-]+ ){0,2}"
    r"(?:essay|letter|email|report|article|story|blog post|proposal|speech|review|summary|cv|resume)\b"
)
_CODE_WORDS = frozenset(
    "python javascript typescript java rust golang c++ c# sql bash regex html css json yaml "
    "dockerfile kubernetes api endpoint compile compiled compiler debug debugging refactor "
    "segfault algorithm complexity".split()
)
_CODE_PHRASES = (" shell script", " unit test", " stack trace")
_CODE_REQUEST = re.compile(
    r"(?:write|implement|fix) (?:a|an|the|this|my) (?:function|class|method|script|program|query|bug)"
)
# Each pattern starts with a literal or a small class, which keeps ``re`` fast.
_CODE_SYNTAX = tuple(
    re.compile(p, re.MULTILINE)
    for p in (
        r"^[ \t]*(?:def|class|import|from \S+ import|function|const|let|var|public|private|"
        r"#include|SELECT|INSERT|UPDATE|CREATE TABLE)\b",
        r"[;{}][ \t]*$",
        r"=>|::|\)\.|\(\)",
        r"Traceback \(most recent call last\)|(?:Error|Exception): ",
    )
)
_MATH_WORDS = frozenset(
    "integral derivative theorem lemma equation equations polynomial matrix probability "
    "modulo primes irrational induction eigenvalue eigenvalues eigenvector".split()
)
_MATH_PHRASES = (" expected value", " prime number")
_MATH_SYNTAX = tuple(
    re.compile(p)
    for p in (
        r"\$[^$\n]+\$",
        r"\\(?:frac|int|sum|sqrt|lim|prod)\b",
        r"\d ?[\^*/] ?\d",
        r"[a-z] ?\^ ?\d",
        r"[a-z] ?= ?[-\d(]",
    )
)
_FENCE = re.compile(r"```|~~~")
_LIST_ITEM = re.compile(r"^[ \t]*(?:\d+[.)]|[-*•])[ \t]+\S", re.MULTILINE)


def classify(prompt: str) -> tuple[str, str]:
    """Return ``(tier, reason)`` for ``prompt``; ``reason`` is a short plain sentence."""
    if len(prompt) > PREMIUM_CHARS:
        return PREMIUM, f"very long prompt ({len(prompt):,} characters)"
    text = prompt if len(prompt) <= HEAD + TAIL else prompt[:HEAD] + "\n" + prompt[-TAIL:]
    lower = " " + text.lower() + " "
    words = set(_WORD.findall(lower))

    cues = sorted(
        {w for w in words & _REASONING_WORDS}
        | {p.strip().replace("-", " ") for p in _REASONING_PHRASES if p in lower}
    )
    if _FENCE.search(text):
        code = "a code block"
    elif any(p.search(text) for p in _CODE_SYNTAX):
        code = "code"
    elif words & _CODE_WORDS or any(p in lower for p in _CODE_PHRASES) or _CODE_REQUEST.search(lower):
        code = "a programming question"
    else:
        code = ""
    maths = bool(
        words & _MATH_WORDS
        or any(p in lower for p in _MATH_PHRASES)
        # In code, "x = 1" is an assignment, not an equation.
        or (not code and any(p.search(lower) for p in _MATH_SYNTAX))
    )
    items = len(_LIST_ITEM.findall(text))
    steps = items >= 3
    if _WRITING.search(lower):
        request = "a writing task"
    elif any(p in lower for p in _EXPLAIN_PHRASES):
        request = "a request for an explanation"
    else:
        request = ""

    found: list[str] = []
    if cues:
        quoted = ", ".join(f"'{c}'" for c in cues[:3])
        found.append(f"reasoning cues ({quoted})" if len(cues) > 1 else f"a reasoning cue ({quoted})")
    if code:
        found.append(code)
    if maths:
        found.append("maths")
    if steps:
        found.append(f"a {items}-item list")
    if request and not found:
        found.append(request)

    if len(cues) >= 2 or (cues and (code or maths or steps)):
        return PREMIUM, _sentence(found)
    if found:
        return STANDARD, _sentence(found)
    if len(prompt) > STANDARD_CHARS:
        return STANDARD, f"long prompt ({len(prompt):,} characters)"
    return FAST, "short prompt without code or reasoning cues"


def _sentence(found: list[str]) -> str:
    if len(found) == 1:
        return found[0]
    return ", ".join(found[:-1]) + " and " + found[-1]
