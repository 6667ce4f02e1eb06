"""The running app through Gradio's API, with a scripted provider behind it."""

from __future__ import annotations

import threading
import time

import pytest
from gradio_client import Client

from chat.catalogue import Catalogue, ModelSpec
from chat.config import Settings
from chat.errors import Unavailable
from chat.runtime import Runtime
from tests.conftest import free_port
from tests.scripted import Reply, ScriptedProvider
from tests.servers import in_process

TOKENS = [f"word{i} " for i in range(20)]


@pytest.fixture(scope="module")
def fake_app():
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, local_model_enabled=False, ollama_enabled=False, max_message_chars=500
    )
    fake = ScriptedProvider("fake", default=Reply(list(TOKENS), delay=0.05))
    catalogue = Catalogue(models=(
        ModelSpec("fake:slow", "Slow fake", "fast", 8000),
        ModelSpec("fake:broken", "Broken fake", "premium", 8000),  # nothing to fall back to
        ModelSpec("fake:thinker", "Slow starter", "standard", 8000),
    ))
    runtime = Runtime.build(settings, providers={"fake": fake}, catalogue=catalogue)
    with in_process(runtime, free_port()) as url:
        yield url, fake


def answer_of(result) -> str:
    """The answer is the last message without a note title."""
    messages = result if isinstance(result, list) else [result]
    plain = [m for m in messages if not (m.get("metadata") or {}).get("title")]
    return plain[-1]["content"] if plain else ""


def stream(url: str, message: str, model: str = "fake:slow") -> list[tuple[float, list]]:
    client = Client(url, verbose=False)
    job = client.submit(message, model, "Be brief.", 0.5, 256, api_name="/chat")
    updates = []
    for output in job:
        updates.append((time.monotonic(), output))
    job.result()
    return updates


def test_answer_streams_in_growing_updates(fake_app):
    url, _ = fake_app
    updates = stream(url, "hello")
    texts = [answer_of(out) for _, out in updates]
    assert texts[-1] == "".join(TOKENS)
    growing = [t for t in texts if t]
    assert len(growing) >= 3, "intermediate updates arrive before the final one"
    assert all(len(a) < len(b) for a, b in zip(growing, growing[1:]))
    # The answer says which model produced it.
    titles = [(m.get("metadata") or {}).get("title", "") for m in updates[-1][1]]
    assert any("fake:slow" in t for t in titles)


def test_two_users_stream_at_the_same_time(fake_app):
    url, _ = fake_app
    spans: dict[str, tuple[float, float]] = {}

    def run(name: str) -> None:
        updates = stream(url, f"question from {name}")
        spans[name] = (updates[0][0], updates[-1][0])

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    (a0, a1), (b0, b1) = spans["a"], spans["b"]
    # Each answer takes ~1 s (20 tokens x 50 ms). Serialized, one would start
    # only after the other ended; here both are streaming at once.
    assert a0 < b1 and b0 < a1, f"streams did not overlap: a={spans['a']} b={spans['b']}"


def test_empty_message_is_refused_without_a_model_call(fake_app):
    url, fake = fake_app
    calls = len(fake.calls)
    with pytest.raises(Exception, match="empty"):
        Client(url, verbose=False).predict("   \n ", "fake:slow", "", 0.5, 64, api_name="/chat")
    assert len(fake.calls) == calls


def test_oversized_message_names_the_limit(fake_app):
    url, fake = fake_app
    calls = len(fake.calls)
    with pytest.raises(Exception, match="limit is 500 characters"):
        Client(url, verbose=False).predict("x" * 501, "fake:slow", "", 0.5, 64, api_name="/chat")
    assert len(fake.calls) == calls


def test_unknown_model_lists_the_available_ones(fake_app):
    url, fake = fake_app
    with pytest.raises(Exception, match="fake:slow") as info:
        Client(url, verbose=False).predict("hi", "nope:model", "", 0.5, 64, api_name="/chat")
    assert "nope:model" in str(info.value)


def test_server_stays_up_after_bad_input(fake_app):
    url, _ = fake_app
    for bad in ("", "y" * 10_000):
        with pytest.raises(Exception):
            Client(url, verbose=False).predict(bad, "fake:slow", "", 0.5, 64, api_name="/chat")
    result = Client(url, verbose=False).predict("still there?", "fake:slow", "", 0.5, 64, api_name="/chat")
    assert answer_of(result) == "".join(TOKENS)


def test_when_every_model_fails_the_partial_answer_stays_with_the_reasons(fake_app):
    url, fake = fake_app
    fake.enqueue("broken", Reply(["Half an ", "answer"], error=Unavailable("upstream 503")))
    client = Client(url, verbose=False)
    messages = client.predict("hi", "fake:broken", "", 0.5, 64, api_name="/chat")
    assert answer_of(messages) == "Half an answer"
    failure = [m for m in messages if "could not be completed" in (m.get("metadata") or {}).get("title", "")]
    assert failure, messages
    assert "fake:broken" in failure[0]["content"] and "unavailable" in failure[0]["content"]
    # The conversation goes on.
    assert answer_of(client.predict("again", "fake:slow", "", 0.5, 64, api_name="/chat")) == "".join(TOKENS)


def test_the_model_note_shows_while_the_first_token_is_awaited(fake_app):
    url, fake = fake_app
    # A 3 s wait for the first token; the note must come in its first half.
    # (With 1.5 s and a 1 s bound, one full-suite run saw 0.95 s: server,
    # client and pytest share one process and its garbage collector.)
    fake.enqueue("thinker", Reply(["Finally."], delay=3.0))
    updates = stream(url, "think hard", model="fake:thinker")
    first = updates[0][1]
    assert answer_of(first) == "" and any("fake:thinker" in (m.get("metadata") or {}).get("title", "") for m in first)
    assert updates[0][0] < updates[-1][0] - 1.5, "the note came well before the answer"
    assert answer_of(updates[-1][1]) == "Finally."
