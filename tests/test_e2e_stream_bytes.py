"""Issue 10 end to end: the bytes the browser receives for a long streamed answer
stay linear in its text, on ``python app.py`` in front of a wire server.

A 4,000-token answer at 1,000 tokens/s, read through Gradio's queue protocol
over raw SSE (``POST /gradio_api/queue/join``, ``GET /gradio_api/queue/data``)
exactly as the page does: every byte of the event's SSE stream is counted.
Bytes are counted, not time. Before the fix each update resent the whole answer
(a ``gr.ChatMessage`` is opaque to Gradio's diff): ~50× the text.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e_support import SYSTEM, run_app, wire_env, write_catalogue
from tests.wire import WireServer

TOKENS = 4000
EXPECTED = "".join(f"w{i} " for i in range(TOKENS))
BUDGET = 3.0  # SSE bytes per byte of answer text


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cwd = tmp_path_factory.mktemp("bytes-app")
    with WireServer() as wire:
        env = wire_env(wire, write_catalogue(cwd), "sk-test-bytes",
                       CHAT_LOCAL_MODEL_ENABLED="false", CHAT_OLLAMA_ENABLED="false")
        with run_app(env, cwd, cwd / "app.log") as url:
            yield url


class Queue:
    """One browser tab speaking Gradio's queue protocol."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = uuid.uuid4().hex[:11]
        names = [d.get("api_name") for d in httpx.get(url + "config", timeout=10).json()["dependencies"]]
        self.fn = {name: index for index, name in enumerate(names)}

    def event(self, fn: str, data: list[Any]) -> tuple[int, dict[str, Any]]:
        """Run one event; (SSE bytes received, its process_completed message)."""
        payload = {"data": data, "fn_index": self.fn[fn], "session_hash": self.session,
                   "event_data": None, "trigger_id": None}
        httpx.post(self.url + "gradio_api/queue/join", json=payload, timeout=10).raise_for_status()
        received = 0
        buffer = b""
        with httpx.stream("GET", self.url + f"gradio_api/queue/data?session_hash={self.session}",
                          timeout=120) as stream:
            for raw in stream.iter_raw():
                received += len(raw)
                buffer += raw
                for line in buffer.split(b"\n")[:-1]:
                    if line.startswith(b"data:") and b'"process_completed"' in line:
                        return received, json.loads(line[5:])
                buffer = buffer[buffer.rfind(b"\n") + 1:]
        raise AssertionError("the stream ended without process_completed")


def answer_of(messages: list[dict[str, Any]]) -> str:
    message = messages[-1]
    assert not (message.get("metadata") or {}).get("title"), message
    content = message["content"]
    if isinstance(content, list):  # the page's shape: text parts
        content = "".join(part.get("text", "") for part in content)
    return str(content)


def test_a_long_answer_reaches_the_page_as_appends(app: str) -> None:
    tab = Queue(app)
    prompt = f"[[rate:1000]] [[tokens:{TOKENS}]]"
    tab.event("_clear_and_save_textbox", [prompt])  # as the page does before streaming
    sent, done = tab.event("_submit_fn", [None, None, "openai:wire-gpt", SYSTEM, 0.5, 8000])
    answer = answer_of(done["output"]["data"][1])
    assert answer.strip() == EXPECTED.strip()
    assert sent <= BUDGET * len(answer.encode()), f"{sent:,} SSE bytes for {len(answer.encode()):,} bytes of text"


def test_a_long_answer_through_the_chat_route_too(app: str) -> None:
    tab = Queue(app)
    sent, done = tab.event("chat", [f"[[rate:1000]] [[tokens:{TOKENS}]]", [], "openai:wire-gpt", SYSTEM, 0.5, 8000])
    answer = answer_of(done["output"]["data"][0])
    assert answer == EXPECTED
    assert sent <= BUDGET * len(answer.encode()), f"{sent:,} SSE bytes for {len(answer.encode()):,} bytes of text"
