"""Issue 4 end to end: fallback, mid-stream recovery, stalls, total failure, Stop
and cooldown, seen through ``python app.py``'s /chat and /refresh_models routes
with every provider on a local wire-protocol server.

Failures are scripted with magic words scoped to one model (``[[fail:503@wire-gpt]]``,
see ``tests.wire``), so the primary fails and the fallback answers normally.
The embedded model is off here: its place as the last fallback is covered in
``test_e2e_providers``, and every model must be able to fail in these tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from gradio_client import Client

from tests.e2e_support import (
    SYSTEM,
    answer_of,
    chat,
    choices,
    model_of,
    notes_of,
    queue_chat,
    requests_for,
    run_app,
    tag,
    user_texts,
    wait_for,
    wire_env,
    write_catalogue,
)
from tests.wire import WireServer

STALL = 2.0  # CHAT_FIRST_TOKEN_TIMEOUT and CHAT_STALL_TIMEOUT of the app under test
MARGIN = 6.0  # generous: process start-up noise on a busy 2-core machine


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    with WireServer(ollama_models=["llama3.2:latest"]) as server:
        yield server


@pytest.fixture(scope="module")
def url(wire: WireServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cwd = tmp_path_factory.mktemp("router-app")
    env = wire_env(
        wire, write_catalogue(cwd), "sk-e2e-router-fake",
        CHAT_LOCAL_MODEL_ENABLED="false",
        CHAT_FIRST_TOKEN_TIMEOUT=str(STALL),
        CHAT_STALL_TIMEOUT=str(STALL),
        # Benches come only from Retry-After here, so one test's failures do not
        # change the next test's chain (the cooldown test uses a model of its own).
        CHAT_COOLDOWN_SECONDS="0",
    )
    with run_app(env, cwd, cwd / "app.log") as app_url:
        yield app_url


def fallback_notes(titles: list[str]) -> list[str]:
    return [t for t in titles if t.startswith("⚠️ ")]


def test_primary_503_the_fallback_answers_and_the_note_says_so(url, wire):
    marker = tag()
    outcome = chat(url, f"What is a wire? {marker} [[fail:503@wire-gpt]]", "openai:wire-gpt")

    assert outcome.error is None, outcome.error
    assert outcome.answer == f"Echo: What is a wire? {marker}"
    [note] = fallback_notes(outcome.titles)
    assert note.startswith("⚠️ openai:wire-gpt failed (unavailable or overloaded: HTTP 503"), note
    assert note.endswith("anthropic:wire-claude answers instead"), note
    assert outcome.titles[0] == "🤖 Answered by Wire Claude (anthropic:wire-claude) (after a fallback)"
    # Another model was ready, so no retry of the failed one: one call each.
    assert [model_of(r) for r in requests_for(wire, marker)] == ["wire-gpt", "wire-claude"]


def test_cut_after_10_tokens_continues_from_exactly_there(url, wire):
    marker = tag()
    message = f"List words {marker} [[tokens:30]] [[cut:10@wire-gpt]]"
    outcome = chat(url, message, "openai:wire-gpt")

    assert outcome.error is None, outcome.error
    first, second = requests_for(wire, marker)
    assert (model_of(first), model_of(second)) == ("wire-gpt", "wire-claude")
    partial = "".join(f"w{i} " for i in range(10))

    # The continuation request carries the original turn, the partial answer
    # and an instruction to continue it.
    messages = second.body["messages"]
    assert messages[0] == {"role": "user", "content": message}
    assert messages[1] == {"role": "assistant", "content": partial}, "exactly the text shown so far"
    assert messages[-1]["role"] == "user"
    assert second.body["system"] == SYSTEM
    assert user_texts(second)[-1].endswith("<tail>w7 w8 w9</tail>"), "the tail to restate is quoted"
    # The fallback (a compliant model) restated "w7 w8 w9", then went on: the
    # seam cut the restatement, so the answer reads as one.
    assert outcome.answer == "".join(f"w{i} " for i in range(30)), "those 10 tokens, then the rest"
    # Every update the user saw only ever grew: nothing shown was taken back.
    texts = outcome.growing()
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:])), texts
    [note] = fallback_notes(outcome.titles)
    assert note.startswith("⚠️ openai:wire-gpt failed (stream interrupted"), note
    assert note.endswith("anthropic:wire-claude continues the answer from where it stopped"), note
    seam = dict(notes_of(outcome.last))[note]
    assert f"after {len(partial)} characters" in seam, seam


def test_stall_before_the_first_token_falls_back_after_the_limit(url, wire):
    marker = tag()
    outcome = chat(url, f"Hello {marker} [[stall:30@wire-gpt]]", "openai:wire-gpt")

    assert outcome.error is None, outcome.error
    assert outcome.answer == f"Echo: Hello {marker}"
    [note] = fallback_notes(outcome.titles)
    assert f"no text within {STALL:g} s" in note and "anthropic:wire-claude answers instead" in note, note
    assert STALL <= outcome.elapsed < STALL + MARGIN, outcome.elapsed
    stalled = requests_for(wire, marker)[0]
    assert model_of(stalled) == "wire-gpt"
    assert stalled.disconnected is not None, "the stalled upstream was hung up on"


def test_stall_mid_stream_falls_back_after_the_limit_and_continues(url, wire):
    marker = tag()
    outcome = chat(url, f"Go on {marker} [[tokens:12]] [[stall:30:3@wire-gpt]]", "openai:wire-gpt")

    assert outcome.error is None, outcome.error
    assert outcome.answer == "".join(f"w{i} " for i in range(12)), "continued from exactly there"
    [note] = fallback_notes(outcome.titles)
    assert f"no text for {STALL:g} s" in note and "continues the answer" in note, note
    assert STALL <= outcome.elapsed < STALL + MARGIN, outcome.elapsed
    # The first three tokens reached the user while the primary was silent, not only at the end.
    first_text = next(t for t, out in outcome.updates if answer_of(out))
    assert first_text - outcome.started < STALL
    stalled = requests_for(wire, marker)[0]
    assert stalled.disconnected is not None, "the stalled upstream was hung up on"


def test_every_model_fails_partial_text_stays_and_the_error_lists_each(url, wire):
    marker = tag()
    message = (f"Explain {marker} [[tokens:20]] [[cut:6@wire-gpt]] [[fail:503@wire-claude]]"
               " [[fail:404@llama3.2:latest]]")
    received = queue_chat(url, message, "openai:wire-gpt")
    assert [model_of(r) for r in requests_for(wire, marker)] == ["wire-gpt", "wire-claude", "llama3.2:latest"]

    # A failed answer ends the answer, not the conversation (see chat/ui.py):
    # the event completes, with the partial text and a note saying what failed.
    completed = received[-1]
    assert completed["msg"] == "process_completed" and completed["success"], completed
    last = completed["output"]["data"][0]
    partial = "".join(f"w{i} " for i in range(6))
    assert answer_of(last) == partial, "the partial answer is kept in the last payload"
    error = dict(notes_of(last)).get("❌ The answer could not be completed", "")
    assert error.startswith("No model could answer."), notes_of(last)
    reasons = dict(part.split(": ", 1) for part in error.removeprefix("No model could answer. Tried ")
                   .rstrip(".").split("; "))
    assert list(reasons) == ["openai:wire-gpt", "anthropic:wire-claude", "ollama:llama3.2:latest"], reasons
    assert reasons["openai:wire-gpt"].startswith("stream interrupted")
    assert "503" in reasons["anthropic:wire-claude"]
    assert reasons["ollama:llama3.2:latest"].startswith("model not found")
    # ... and a toast says the same.
    toasts = [m for m in received if m.get("msg") == "log"]
    assert [t.get("level") for t in toasts] == ["warning"], toasts
    assert toasts[0]["log"] == error

def test_when_every_model_fails_no_note_claims_one_answered(url, wire):
    # Regression: the route note used to read "Answered by <last model> (after a
    # fallback)" even when that model failed too.
    outcome = chat(url, f"Explain {tag()} [[fail:503@wire-gpt]] [[fail:503@wire-claude]]"
                        " [[fail:404@llama3.2:latest]]", "openai:wire-gpt")
    assert "❌ The answer could not be completed" in outcome.titles, outcome.titles
    assert not [t for t in outcome.titles if "Answered by" in t], outcome.titles


def test_stop_during_a_fallback_hangs_up_on_the_upstream(url, wire):
    marker = tag()
    client = Client(url, verbose=False)
    job = client.submit(f"Talk {marker} [[fail:503@wire-gpt]] [[tokens:200]] [[delay:0.1]]",
                        "openai:wire-gpt", SYSTEM, 0.5, 512, api_name="/chat")

    def fallback_streaming():
        outputs = job.outputs()
        last = outputs[-1] if outputs else []
        return bool(answer_of(last)) and bool(fallback_notes([t for t, _ in notes_of(last)]))

    wait_for(fallback_streaming, 20, "the fallback to start streaming", interval=0.05)
    [_, fallback] = requests_for(wire, marker)
    assert model_of(fallback) == "wire-claude" and fallback.disconnected is None

    job.cancel()
    stopped = time.monotonic()
    wait_for(lambda: fallback.disconnected is not None, 3, "the fallback's upstream to see the disconnect")
    assert fallback.disconnected - stopped < 2.0
    assert fallback.finished is None or fallback.finished >= fallback.disconnected, "it had not finished"
    assert len(requests_for(wire, marker)) == 2, "Stop starts no other model"


def test_rate_limit_with_retry_after_shows_the_model_cooling_down(url, wire):
    marker = tag()
    asked = datetime.now()
    outcome = chat(url, f"Hi {marker} [[fail:429@wire-cool]] [[retry-after:30@wire-cool]]", "openai:wire-cool")

    assert outcome.error is None, outcome.error
    assert outcome.answer == f"Echo: Hi {marker}"
    [note] = fallback_notes(outcome.titles)
    assert note.startswith("⚠️ openai:wire-cool failed (rate limited"), note

    label = choices(url)["openai:wire-cool"]
    assert "cooling down until" in label and "rate limited" in label, label
    until = datetime.strptime(label.split("cooling down until ")[1][:8], "%H:%M:%S").time()
    until_dt = datetime.combine(asked.date(), until)
    if until_dt < asked - timedelta(hours=12):  # crossed midnight
        until_dt += timedelta(days=1)
    assert asked + timedelta(seconds=25) <= until_dt <= asked + timedelta(seconds=40), (asked, label)
    # The other models are untouched.
    assert " — " not in choices(url)["openai:wire-gpt"]
