"""The API's pure parts: request bodies → ``CompletionRequest``, and events →
the chunk bytes a client parses."""

from __future__ import annotations

import json

import pytest

from chat.api.chunks import Answer
from chat.api.errors import ApiError
from chat.api.schema import parse_completion
from chat.catalogue import Catalogue, ModelSpec
from chat.events import FallingBack, Finish, ModelSelected, Retrying, TextDelta, Usage
from chat.messages import Message
from chat.tokens import estimate_tokens

CATALOGUE = Catalogue(models=(ModelSpec("p:a", "A", "fast", 8000), ModelSpec("q:b", "B", "premium", 8000)))


def parse(body: dict) -> object:
    return parse_completion(json.dumps(body).encode(), default_model="auto")


def test_roles_parts_and_consecutive_messages_become_one_conversation():
    req = parse({"model": " p:a ", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        {"role": "user", "content": "Context."},
        {"role": "user", "content": [{"type": "text", "text": "Question "}, {"type": "text", "text": "one?"}]},
        {"role": "assistant", "content": None},  # e.g. a tool call turn: nothing to show
        {"role": "assistant", "content": "Answer."},
        {"role": "user", "content": "Two?"},
    ], "max_tokens": 5, "max_completion_tokens": 7, "top_p": 0.3, "unknown": {"x": 1}})
    assert req.model == "p:a"
    assert req.system_prompt == "Be brief.\n\nUse French."
    assert req.history == (Message("user", "Context.\n\nQuestion one?"), Message("assistant", "Answer."))
    assert (req.message, req.answer_so_far, req.max_tokens) == ("Two?", "", 7)


def test_a_last_assistant_message_is_the_answer_to_continue_and_the_model_defaults():
    req = parse({"messages": [{"role": "user", "content": "Count"}, {"role": "assistant", "content": "one two "}]})
    assert (req.model, req.message, req.answer_so_far, req.system_prompt) == ("auto", "Count", "one two ", None)


@pytest.mark.parametrize("body", [{"messages": [{"role": "user", "content": "x"}], "temperature": True},
                                  {"messages": [{"role": "user", "content": "x"}], "n": 1.0},
                                  {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2.5}])
def test_booleans_and_floats_are_not_whole_numbers(body):
    with pytest.raises(ApiError) as caught:
        parse(body)
    assert caught.value.status == 400 and caught.value.param in ("temperature", "n", "max_tokens")


def sse(data: bytes) -> list[dict]:
    """The JSON documents of the events; every event has an id, numbered 1, 2, … in order."""
    events = [block for block in data.decode().split("\n\n") if block]
    ids = [int(block.split("\n")[0].removeprefix("id: ")) for block in events]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids
    events = [block.split("\n", 1)[1] for block in events]
    assert all(block.startswith("data: ") for block in events), events
    return [json.loads(block[6:]) for block in events if block != "data: [DONE]"]


def test_text_is_batched_per_model_and_each_chunk_names_its_writer():
    answer = Answer(CATALOGUE, model="p:a", include_usage=True)
    data = answer.encode([ModelSelected("p:a", "A"), TextDelta("Hel"), TextDelta("lo")])
    data += answer.encode([TextDelta(" wor"), FallingBack("p:a", "timed out", "q:b", continuing=True),
                           ModelSelected("q:b", "B"), TextDelta("ld"), Usage(3, 4)])
    data += answer.encode([TextDelta("!"), Retrying("q:b", 1, 0.5, "rate limited")])
    data += answer.end()
    chunks = sse(data)
    texts = [(c["model"], c["choices"][0]["delta"].get("content")) for c in chunks if c["choices"]]
    assert texts[:4] == [("p:a", "Hello"), ("p:a", " wor"), ("q:b", "ld"), ("q:b", "!")]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    notices = [n["type"] for c in chunks for n in c.get("relay", {}).get("notices", [])]
    assert notices == ["model", "fallback", "model", "retry"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and {k: usage[k] for k in ("prompt_tokens", "completion_tokens",
                                                                     "total_tokens")} == {
        "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    # The live figures ride along: both writers, q:b's reported 4 tokens plus an
    # estimate for the text p:a wrote before it failed (no report from p:a).
    relay = usage["relay"]
    assert relay["models"] == ["p:a", "q:b"] and relay["cached"] is False
    assert relay["estimated"] is True and relay["output_tokens"] == 4 + estimate_tokens("Hello wor")
    assert relay["input_tokens"] == 3 and 0 <= relay["ttft_s"] <= relay["duration_s"]
    assert data.endswith(b"data: [DONE]\n\n")
    assert {c["id"] for c in chunks} == {answer.id}
    assert answer.headers() == {"X-Model-Name": "p:a", "X-Model-Tier": "fast", "X-Fallback-Used": "true"}


def test_an_error_after_text_is_an_event_then_done_and_finish_reasons_are_openais():
    answer = Answer(CATALOGUE, model="p:a")
    data = answer.encode([TextDelta("Hi")]) + answer.error({"error": {"message": "boom"}})
    assert sse(data)[-1] == {"error": {"message": "boom"}} and data.endswith(b"data: [DONE]\n\n")
    other = Answer(CATALOGUE, model="p:a")
    other.encode([Finish("max_tokens")])
    assert sse(other.end())[-1]["choices"][0]["finish_reason"] == "length"
