"""Auto's tier heuristic on realistic prompts, and its cost."""

from __future__ import annotations

import time

import pytest

from chat.tiering import PREMIUM_CHARS, classify

FAST = [
    "hi",
    "Thanks, that helped!",
    "What's the capital of Australia?",
    "Translate 'good morning' into Spanish",
    "Tell me a joke about cats",
    "What is the function of the liver?",
    "Give me a recipe for pancakes",
    "Rewrite this more politely: send me the report now.",
    "Who wrote Pride and Prejudice?",
    "I went there in 2020; it was fun.",
    "Write a haiku about autumn",
    "Why is the sky blue?",
]
STANDARD = [
    "Why does this raise a KeyError?\n```python\nd = {}\nprint(d['a'])\n```",
    "Write a function in JavaScript that debounces another function.",
    "How do I center a div in CSS?",
    "Fix this: TypeError: 'NoneType' object is not subscriptable",
    "Solve x^2 - 5x + 6 = 0",
    "1. Install the package\n2. Configure it\n3. Run the tests\nWhat could go wrong?",
    "Plan a three-day trip to Rome.",
    "Explain in detail how vaccines train the immune system.",
    "Explain how a transformer neural network works.",
    "What's the difference between a list and a tuple?",
    "Write a cover letter for a junior data analyst position at a bank.",
    "What is the time complexity of quicksort?",
    "Should I use tabs or spaces?",
    "Summarize this article:\n" + "The council met on Tuesday to discuss the budget. " * 20,
]
PREMIUM = [
    "Prove that the square root of 2 is irrational, step by step.",
    "Compare PostgreSQL and MongoDB for an analytics workload and analyze the trade-offs.",
    "Analyze this code for race conditions:\n```go\nfunc (c *Cache) Get(k string) string {\n  return c.m[k]\n}\n```",
    "Derive the closed form of the sum 1 + 2 + ... + n by induction.",
    "Design a rate limiter for an API gateway, compare token bucket and sliding window, "
    "and explain why you would pick one.",
    "Here are the logs:\n" + "2026-11-22 ERROR worker crashed\n" * 400,
]


@pytest.mark.parametrize("prompt", FAST)
def test_fast(prompt):
    assert classify(prompt)[0] == "fast"


@pytest.mark.parametrize("prompt", STANDARD)
def test_standard(prompt):
    assert classify(prompt)[0] == "standard"


@pytest.mark.parametrize("prompt", PREMIUM)
def test_premium(prompt):
    assert classify(prompt)[0] == "premium"


def test_reasons_are_plain_words():
    assert classify("hi")[1] == "short prompt without code or reasoning cues"
    assert classify("```\nx = 1\n```")[1] == "a code block"
    assert classify("Prove it step by step.")[1] == "reasoning cues ('prove', 'step by step')"
    assert classify("Plan a trip.")[1] == "a reasoning cue ('plan a')"
    assert classify("Draft an email to my landlord.")[1] == "a writing task"
    assert classify("How does a bicycle stay upright?")[1] == "a request for an explanation"
    tier, reason = classify("x" * (PREMIUM_CHARS + 1))
    assert tier == "premium" and reason == f"very long prompt ({PREMIUM_CHARS + 1:,} characters)"


def test_cues_at_the_end_of_a_long_paste_are_seen():
    prompt = "lorem ipsum dolor " * 400 + "\nCompare both drafts and analyze the tone."
    assert classify(prompt)[0] == "premium"


def test_thousand_prompts_well_under_a_millisecond_each():
    prompts = FAST + STANDARD + PREMIUM
    classify("warm up")
    started = time.perf_counter()
    for i in range(1000):
        classify(prompts[i % len(prompts)])
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{elapsed * 1000:.0f} ms for 1,000 prompts"


@pytest.mark.parametrize("prompt", ["x" * 8000, "f(" * 4000, " " * 8000, "\n" * 8000, "a=" * 4000,
                                    "-\n" * 4000, "write a " * 1000, "y" * 1_000_000])
def test_adversarial_prompts_stay_cheap(prompt):
    # Long runs of what the patterns look for (or never find): the scan is
    # bounded, so even these stay around a millisecond; the bound is generous.
    started = time.perf_counter()
    for _ in range(10):
        classify(prompt)
    assert (time.perf_counter() - started) / 10 < 0.02
