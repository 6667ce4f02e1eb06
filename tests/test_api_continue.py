"""Continuing a cut answer (``Turn.answer_so_far``) through the real service,
router and seam, with a scripted provider: the continuation request has the
same shape as mid-stream recovery's, and only new text comes back."""

from __future__ import annotations

import pytest

from chat.catalogue import Catalogue, ModelSpec
from chat.continuation import continue_instruction
from chat.errors import InputError, Unavailable
from chat.events import FallingBack
from chat.messages import Message
from chat.service import Turn
from tests.scripted import Reply, answer, scripted_runtime

CATALOGUE = Catalogue(
    models=(ModelSpec("fake:a", "Model A", "fast", 8000), ModelSpec("fake:b", "Model B", "fast", 8000)),
    fallback=("fake:a", "fake:b"),
)


@pytest.fixture
def runtime(settings_factory):
    return scripted_runtime(settings_factory(local_model_enabled=False, ollama_enabled=False), CATALOGUE)


async def test_the_model_is_asked_to_continue_and_only_new_text_comes_back(runtime):
    rt, fake = runtime
    # The model repeats the end of what it was given before going on: the seam cuts it.
    fake.enqueue("a", Reply(["France is", " Paris", "."]))
    history = (Message("user", "Hi"), Message("assistant", "Hello!"))
    text, _ = await answer(rt, Turn("What is the capital of France?", history=history, model_id="fake:a",
                                    system_prompt="Be brief.", answer_so_far="The capital of France is"))
    assert text == " Paris."
    assert fake.calls[0].messages == (
        Message("system", "Be brief."),
        *history,
        Message("user", "What is the capital of France?"),
        Message("assistant", "The capital of France is"),
        Message("user", continue_instruction("The capital of France is")),
    )


async def test_a_failure_while_continuing_hands_the_whole_answer_to_the_next_model(runtime):
    rt, fake = runtime
    fake.enqueue("a", Reply([" two", " three"], error=Unavailable("overloaded")))
    fake.enqueue("b", Reply([" four."]))
    text, events = await answer(rt, Turn("Count", model_id="fake:a", answer_so_far="one"))
    assert text == " two three four."
    [fallback] = [e for e in events if isinstance(e, FallingBack)]
    assert fallback.continuing
    assert fake.calls[1].messages[-2] == Message("assistant", "one two three"), "the client's text and ours"


async def test_whitespace_is_no_answer_to_continue(runtime):
    rt, fake = runtime
    text, _ = await answer(rt, Turn("Hello", model_id="fake:a", answer_so_far="  \n"))
    assert text == "echo: Hello"
    assert fake.calls[0].messages[-1] == Message("user", "Hello")


async def test_an_answer_too_long_to_continue_is_refused_before_any_call(runtime):
    rt, fake = runtime
    with pytest.raises(InputError, match="The answer to continue is about"):
        await answer(rt, Turn("Go on", model_id="fake:a", answer_so_far="word " * 20_000))
    assert fake.calls == []
