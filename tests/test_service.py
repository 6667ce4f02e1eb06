"""The chat service and the UI boundary, with a scripted provider behind the real
router and context manager."""

from __future__ import annotations

import pytest

from chat.catalogue import Catalogue, ModelSpec
from chat.errors import AllModelsFailed, ContextLengthExceeded, InputError, InvalidRequest, RateLimited
from chat.events import ContextTrimmed, FallingBack, Finish, ModelSelected, Summarizing, SummaryInUse, TextDelta, Usage
from chat.messages import Message
from chat.render import AnswerView
from chat.service import Turn
from chat.ui import history_to_messages
from tests.scripted import Reply, answer, scripted_runtime

CATALOGUE = Catalogue(
    models=(ModelSpec("fake:a", "Model A", "fast", 8000, None, 1.0, 10.0), ModelSpec("fake:b", "Model B", "fast", 8000)),
    fallback=("fake:a", "fake:b"),
)


@pytest.fixture
def runtime(settings_factory):
    return scripted_runtime(settings_factory(local_model_enabled=False, ollama_enabled=False), CATALOGUE)


async def test_answer_comes_with_the_model_that_produced_it(runtime):
    rt, fake = runtime
    fake.enqueue("a", Reply(["Hello", " there"]))
    text, events = await answer(rt, Turn("hi", model_id="fake:a", system_prompt="Be nice."))
    assert text == "Hello there"
    assert isinstance(events[0], ModelSelected) and events[0].model_id == "fake:a"
    sent = fake.calls[0].messages
    assert sent[0] == Message("system", "Be nice.") and sent[-1] == Message("user", "hi")


async def test_context_length_error_compacts_harder_and_retries_once(runtime):
    rt, fake = runtime
    history = tuple(
        Message("user" if i % 2 == 0 else "assistant", f"turn {i} " + "words " * 300) for i in range(10)
    )
    fake.enqueue(
        "a",
        Reply(error=ContextLengthExceeded("too long")),
        Reply(["Ten turns about words."]),  # the summarizer's call (fast tier: fake:a)
        Reply(["ok"]),
    )
    text, events = await answer(rt, Turn("and now?", history=history, model_id="fake:a"))
    assert text == "ok"
    assert any(isinstance(e, SummaryInUse) and e.text == "Ten turns about words." for e in events)
    first, second = fake.calls[0].messages, fake.calls[2].messages
    assert sum(len(m.content) for m in second) < sum(len(m.content) for m in first)
    assert second[-1] == Message("user", "and now?")


async def test_a_second_context_length_error_falls_back_to_a_model_whose_window_fits(runtime):
    rt, fake = runtime
    fake.enqueue("a", Reply(error=ContextLengthExceeded("too long")), Reply(error=ContextLengthExceeded("still")))
    fake.enqueue("b", Reply(["from b"]))
    text, events = await answer(rt, Turn("hi", model_id="fake:a"))
    assert text == "from b"
    assert [c.model for c in fake.calls] == ["a", "a", "b"]
    assert fake.calls[2].messages == fake.calls[0].messages, "the normal plan, not the halved one"
    [notice] = [e for e in events if isinstance(e, FallingBack)]
    assert notice == FallingBack("fake:a", "conversation too long for this model: still", "fake:b")
    assert [e.model_id for e in events if isinstance(e, ModelSelected)] == ["fake:a", "fake:b"]
    view = AnswerView(CATALOGUE)
    for event in events:
        view.apply(event)
    titles = [m["metadata"].get("title") for m in view.messages() if m.get("metadata")]
    assert titles[0] == "🤖 Answered by Model B (fake:b) (after a fallback)"
    assert titles[1].startswith("⚠️ fake:a failed (conversation too long for this model: still)")


async def test_compacting_harder_announces_the_model_once(runtime):
    rt, fake = runtime
    fake.enqueue("a", Reply(error=ContextLengthExceeded("too long")), Reply(["ok"]))
    text, events = await answer(rt, Turn("hi", model_id="fake:a"))
    assert text == "ok"
    assert [e.model_id for e in events if isinstance(e, ModelSelected)] == ["fake:a"]
    view = AnswerView(CATALOGUE)
    for event in events:
        view.apply(event)
    assert view.messages()[0]["metadata"]["title"] == "🤖 Model A (fake:a)"  # not "after a fallback"


async def test_every_model_refusing_the_length_ends_with_all_failed(runtime):
    rt, fake = runtime
    fake.enqueue("a", *[Reply(error=ContextLengthExceeded("too long"))] * 2)
    fake.enqueue("b", Reply(error=ContextLengthExceeded("too long for b too")))
    with pytest.raises(AllModelsFailed) as raised:
        await answer(rt, Turn("hi", model_id="fake:a"))
    assert [m for m, _ in raised.value.attempts] == ["fake:a", "fake:b"]
    assert [c.model for c in fake.calls] == ["a", "a", "b"]


async def test_invalid_request_is_not_retried_elsewhere(runtime):
    rt, fake = runtime
    fake.enqueue("a", Reply(error=InvalidRequest("bad temperature")))
    with pytest.raises(InvalidRequest):
        await answer(rt, Turn("hi", model_id="fake:a"))
    assert [c.model for c in fake.calls] == ["a"]


@pytest.mark.parametrize(
    ("turn", "words"),
    [
        (Turn(""), ["empty"]),
        (Turn(" \n\t "), ["empty"]),
        (Turn("x" * 100_001), ["100,001", "limit is 100,000"]),
        (Turn("word " * 9_000), ["tokens", "at most", "CHAT_MAX_CONTEXT_TOKENS"]),
        (Turn("hi", model_id="nope:x"), ["nope:x", "fake:a", "fake:b", "auto"]),
        (Turn("hi", model_id="fake:a", temperature=3.0), ["between 0 and 2"]),
    ],
)
async def test_bad_input_is_refused_before_any_model_call(runtime, turn, words):
    rt, fake = runtime
    with pytest.raises(InputError) as info:
        await answer(rt, turn)
    for word in words:
        assert word in str(info.value)
    assert fake.calls == []


async def test_fallback_is_rendered_as_a_note_and_the_answer_stays_whole(runtime):
    rt, fake = runtime
    fake.enqueue("a", Reply(["The answer ", "is"], error=RateLimited("slow down")))
    fake.enqueue("b", Reply([" forty-two."]))
    view = AnswerView(rt.router.catalogue)
    async for event in rt.service.respond(Turn("question?", model_id="fake:a")):
        view.apply(event)
    messages = view.messages()
    answer = messages[-1]
    assert answer["content"] == "The answer is forty-two."
    titles = [m["metadata"].get("title", "") for m in messages[:-1]]
    assert any("fake:a failed" in t and "rate limited" in t and "fake:b" in t for t in titles), titles
    assert any("Model B" in t for t in titles), "the note names the model that finished the answer"


def test_summary_and_usage_notes():
    view = AnswerView(CATALOGUE)
    for event in (SummaryInUse(12, "Alice chose plan B."), ModelSelected("fake:a", "Model A", "fast", "short"),
                  TextDelta("Hi"), Usage(100, 5), FallingBack("fake:a", "x", "fake:b")):
        view.apply(event)
    messages = view.messages()
    assert messages[0]["metadata"]["title"].startswith("📝 Earlier conversation summarized (12 messages)")
    assert messages[0]["content"] == "Alice chose plan B."
    assert "Auto → fast tier" in messages[1]["metadata"]["title"]
    assert "tokens 100 in / 5 out" in messages[1]["metadata"]["log"]
    assert "$0.00015" in messages[1]["metadata"]["log"]  # 100 x $1/M + 5 x $10/M
    assert messages[-1]["content"] == "Hi"


def test_history_from_the_browser_and_the_api_is_one_shape():
    browser = [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}], "metadata": None},
        {"role": "assistant", "content": [{"type": "text", "text": "note"}], "metadata": {"title": "🤖 Model A"}},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}], "metadata": {}},
        {"role": "user", "content": "first try"},
        {"role": "user", "content": "second try"},
    ]
    assert history_to_messages(browser) == (
        Message("user", "Hello"),
        Message("assistant", "Hi!"),
        Message("user", "second try"),  # "first try" got no answer
    )
    assert history_to_messages([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]) == (
        Message("user", "a"), Message("assistant", "b"))
    assert history_to_messages(None) == ()


def test_a_failed_summary_leaves_no_spinner_behind():
    view = AnswerView(CATALOGUE)
    for event in (Summarizing(8), ContextTrimmed(8, "summarizing failed: rate limited; the oldest messages were left out"),
                  ModelSelected("fake:a", "Model A"), TextDelta("Hi"), Finish("stop")):
        view.apply(event)
    notes = [m["metadata"] for m in view.messages()[:-1]]
    assert not [n for n in notes if n.get("status") == "pending"], notes
    assert any("8 oldest messages left out" in n["title"] for n in notes)
