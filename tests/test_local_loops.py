"""The embedded model answers without loops: the ``LoopGuard`` on scripted text,
then 20 varied prompts through the real model (llama.cpp, the shipped GGUF)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from chat.config import Settings
from chat.events import Finish, TextDelta
from chat.messages import ChatRequest, Message
from chat.providers.loops import LoopGuard


def guarded(text: str, piece: int = 3) -> tuple[str, bool]:
    guard = LoopGuard()
    shown = [guard.feed(text[i:i + piece]) for i in range(0, len(text), piece)]
    shown.append(guard.flush())
    return "".join(shown), guard.looping


def test_a_line_written_a_third_time_ends_the_answer_unseen():
    line = "# Explanation: The process is the same for every color.\n"
    shown, looping = guarded("Here is why.\n" + line * 5)
    assert looping
    assert shown == "Here is why.\n" + line * 2, "the third copy is never shown"


def test_repeated_sentences_and_numbered_items_count_as_a_loop():
    shown, looping = guarded("Blue light scatters more. " * 4)
    assert looping and shown == "Blue light scatters more. " * 2
    items = "".join(f"{n}. The sky is blue because of scattering.\n" for n in range(1, 6))
    shown, looping = guarded(items)
    assert looping and shown.count("The sky is blue") == 2


def test_a_block_repeated_back_to_back_without_line_ends_is_a_loop():
    shown, looping = guarded("Fruits:\n\n🍌🍔" + "👨\u200b👩☢👩☣👩☤👩☥👩☪" * 30)
    assert looping and shown.count("👩☪") <= 3, shown


def test_ordinary_text_passes_untouched():
    code = "def f(x):\n    if x:\n        return 1\n    }\n    }\n    }\n    return 0\n"
    prose = "It rains. It rains. Then the sun comes out and everything dries in an hour.\n"
    table = "| a | b |\n|---|---|\n" + "=" * 80 + "\n" + "-" * 120
    for text in (code, prose, table, "Short. Short. Short. Short.", "一行。一行。一行。一行。", "ha " * 40):
        assert guarded(text) == (text, False), text
    almost = "The same long sentence here.\n" * 2 + "The same long sentence, but different.\n"
    assert guarded(almost) == (almost, False)


def test_a_held_line_that_turns_out_different_is_shown_in_full():
    guard = LoopGuard()
    line = "A line that repeats itself.\n"
    assert guard.feed(line * 2) == line * 2
    assert guard.feed("A line that") == ""  # could be the third copy: held
    assert guard.feed(" changed.\n") == "A line that changed.\n"
    assert not guard.looping


PROMPTS = [
    "Explain in three bullet points why the sky is blue, then show a small Python function",
    "Write a short poem about the sea.",
    "List five fruits and their colours.",
    "How do I reverse a list in Python? Show code.",
    "What is the capital of France? Answer in one sentence.",
    "Describe a cat to someone who has never seen one.",
    "Give me three tips for learning a new language.",
    "Write a haiku about autumn.",
    "Explain recursion with an example in JavaScript.",
    "What are the steps to make a cup of tea?",
    "Summarize the plot of Romeo and Juliet in a few sentences.",
    "Write a SQL query that counts users by country.",
    "What is photosynthesis?",
    "Compare cats and dogs as pets in a short table.",
    "Write a limerick about a programmer.",
    "Explain what an API is to a child.",
    "Give me a numbered list of the planets in the solar system.",
    "Write a Python class for a bank account with deposit and withdraw methods.",
    "What causes rain? Explain briefly.",
    "Tell me a short story about a robot who learns to paint.",
]


def repeated_lines(text: str) -> list[tuple[str, int]]:
    """Lines (of some substance: not a lone brace, not a code fence opening
    one more example) written 3 times or more."""
    lines = [line.strip() for line in text.split("\n") if not line.strip().startswith("```")]
    counts = Counter(line for line in lines if len(re.sub(r"\W", "", line)) >= 6)
    return [(line, n) for line, n in counts.items() if n >= 3]


@pytest.mark.model
async def test_twenty_varied_prompts_without_a_line_repeated_three_times():
    from chat.providers.local import LocalProvider

    # The app's defaults (penalty, output cap, loop guard); one instance, so the
    # 20 answers run one after another at full speed.
    provider = LocalProvider(Settings(_env_file=None, local_pool_size=1))  # type: ignore[call-arg]
    provider.wait_ready(timeout=120)
    loops = 0
    try:
        for prompt in PROMPTS:
            request = ChatRequest(
                "smollm2",
                (Message("system", "You are a helpful assistant."), Message("user", prompt)),
                temperature=0.0,  # greedy: reproducible, and where a small model loops most
                max_tokens=1024,  # the UI's default: the local cap applies
            )
            parts: list[str] = []
            async for event in provider.stream(request):
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                elif isinstance(event, Finish) and event.reason == "loop":
                    loops += 1
            answer = "".join(parts)
            assert answer.strip(), prompt
            assert repeated_lines(answer) == [], (prompt, answer)
    finally:
        await provider.aclose()
    print(f"loops stopped: {loops} of {len(PROMPTS)}")
