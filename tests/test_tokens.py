"""The offline token estimate and its per-model calibration."""

from __future__ import annotations

import pytest

from chat.messages import Message
from chat.tokens import (
    MAX_SCALE,
    MESSAGE_OVERHEAD,
    MIN_SCALE,
    REPLY_PRIMING,
    TokenCounter,
    estimate_tokens,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("hello", 1),
        ("hello world", 2),  # a single space merges into the next word
        ("conversation", 3),  # 1 per started 5 ASCII letters
        ("The quick brown fox jumps over the lazy dog.", 10),
        ("1234567", 3),  # digits in threes
        ("a,b", 3),  # ASCII punctuation: 1 each
        ("你好世界", 4),  # CJK: 1 per character
        ("こんにちは", 5),
        ("안녕하세요", 5),
        ("Привет", 3),  # other letters: 1 per 2
        ("😀", 3),  # UTF-8 length 4, minus 1
        ("…", 2),
        ("\n\n", 1),
    ],
)
def test_estimate_by_script(text: str, expected: int) -> None:
    assert estimate_tokens(text) == expected


def test_cjk_and_emoji_count_more_than_latin_per_character() -> None:
    latin = "a" * 100
    cjk = "字" * 100
    emoji = "🎉" * 100
    assert estimate_tokens(latin) < estimate_tokens(cjk) < estimate_tokens(emoji)


def test_estimate_is_close_to_real_tokenizers_for_english_prose() -> None:
    # BPE tokenizers spend about 1.3 tokens per English word, punctuation included;
    # the estimate should land near that, erring high rather than low.
    text = (
        "Relay Chat keeps the last turns verbatim, folds older ones into a rolling "
        "summary, shows the user what happened, and never breaks. Every request resends "
        "the history, so cost and latency grow with the conversation until a model "
        "refuses it. Cutting old turns silently loses the thread, which users of other "
        "chat interfaces report exactly."
    )
    words = len(text.split())
    assert 1.2 * words <= estimate_tokens(text) <= 1.7 * words


def test_joined_emoji_and_combining_marks_are_counted_not_crashed() -> None:
    assert estimate_tokens("👨\u200d👩\u200d👧") >= 9
    assert estimate_tokens("e\u0301") == 2
    assert estimate_tokens("\ud800") >= 1  # a lone surrogate from a bad paste


def test_message_and_request_overheads() -> None:
    counter = TokenCounter()
    message = Message("user", "hello world")
    assert counter.message(message) == 2 + MESSAGE_OVERHEAD
    assert counter.request([message, message]) == 2 * (2 + MESSAGE_OVERHEAD) + REPLY_PRIMING


def test_custom_estimate_is_used() -> None:
    counter = TokenCounter(lambda text: len(text), message_overhead=1, reply_priming=0)
    assert counter.request([Message("user", "abcd")]) == 5


def test_unobserved_model_scale_is_one() -> None:
    counter = TokenCounter()
    assert counter.scale("openai:gpt") == 1.0
    assert counter.calibrated(100, "openai:gpt") == 100


def test_observe_moves_quickly_up_and_slowly_down() -> None:
    counter = TokenCounter()
    up = counter.observe("m", 1000, 1400)
    assert up == pytest.approx(1.2)  # alpha 0.5 towards 1.4
    down = counter.observe("m", 1000, 700)
    assert down == pytest.approx(1.2 + 0.2 * (0.7 - 1.2))
    assert counter.calibrated(1000, "m") == 1100
    assert counter.scale("other") == 1.0  # per model


def test_observe_is_bounded() -> None:
    counter = TokenCounter()
    for _ in range(50):
        counter.observe("big", 1000, 2900)
        counter.observe("small", 1000, 550)
    assert counter.scale("big") == MAX_SCALE
    assert counter.scale("small") == MIN_SCALE == 0.75


@pytest.mark.parametrize(
    ("estimated", "reported"),
    [
        (10, 500),  # too small to say anything
        (1000, 0),
        (1000, -5),
        (1000, 120),  # Ollama counting only the uncached part of the prompt
        (1000, 3500),  # a continuation prompt, not the one estimated
    ],
)
def test_observe_ignores_tiny_or_missing_reports(estimated: int, reported: int) -> None:
    counter = TokenCounter()
    assert counter.observe("m", estimated, reported) == 1.0
    assert counter.scale("m") == 1.0
