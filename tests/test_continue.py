"""Continue: the last answer of a chat, read and settled (``chat.ui.continuing``),
then extended in place through ``/continue`` on ``python app.py`` in front of a
wire server — the same message, nothing repeated, the continuation seen upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gradio_client import Client

from chat.render import FAILED_TITLE, STOPPED
from chat.ui.continuing import last_answer, settle
from tests.e2e_support import SYSTEM, answer_of, notes_of, requests_for, run_app, tag, wire_env, write_catalogue
from tests.wire import WireServer


def note(title: str, id_: str, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": "…"}],
            "metadata": {"title": title, "id": id_, **extra}}


def history_with(*after: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [{"type": "text", "text": "Earlier question"}], "metadata": None},
        {"role": "assistant", "content": [{"type": "text", "text": "Earlier answer"}], "metadata": {}},
        {"role": "user", "content": [{"type": "text", "text": "Name the planets."}], "metadata": None},
        *after,
    ]


def test_the_last_answer_and_its_last_part_are_found_in_the_browsers_shape():
    history = history_with(
        note(f"🤖 Model A · {STOPPED}", "note-0", status="done", log="first token 0.2 s"),
        note("⏩ Continued by Model B", "continued1-0", status="done", log="…"),
        note(FAILED_TITLE, "continued1-1"),
        {"role": "assistant", "content": [{"type": "text", "text": "Mercury, Venus, Ea"}], "metadata": {}},
    )
    answer = last_answer(history)
    assert answer is not None and answer.user == 2 and answer.text == "Mercury, Venus, Ea"
    assert [n["metadata"]["id"] for n in answer.part] == ["continued1-0", "continued1-1"]
    assert last_answer([{"role": "assistant", "content": "hi"}]) is None


def test_settle_stops_the_spinner_of_a_stopped_answer_and_says_so():
    history = history_with(
        note("🤖 Model A", "note-0", status="pending", log="first token 0.2 s · total 1.00 s"),
        {"role": "assistant", "content": "Mercury, Ve", "metadata": {}},
    )
    settled = settle(history)
    assert settled is not None
    route = settled[3]["metadata"]
    assert route["status"] == "done" and route["title"] == f"🤖 Model A · {STOPPED}"
    assert history[3]["metadata"]["status"] == "pending", "the input is not mutated"
    assert settle(settled) is None, "nothing left to settle"


# -- through python app.py ---------------------------------------------------------------

GPT = "openai:wire-gpt"
FULL = "".join(f"w{i} " for i in range(40)).strip()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, WireServer]]:
    cwd = tmp_path_factory.mktemp("continue-app")
    with WireServer() as wire:
        # One model per answer: a cut stays cut (no fallback completes it).
        env = wire_env(wire, write_catalogue(cwd), "sk-test-continue", CHAT_LOCAL_MODEL_ENABLED="false",
                       CHAT_OLLAMA_ENABLED="false", CHAT_FALLBACK_DEPTH="1", CHAT_MAX_RETRIES="0")
        with run_app(env, cwd, cwd / "app.log") as url:
            yield url, wire


def test_continue_extends_the_same_answer_with_nothing_repeated(app):
    url, wire = app
    client = Client(url, verbose=False)
    marker = tag()
    message = f"[[tokens:40]] [[cut:15]] count {marker}"
    first = client.predict(message, GPT, SYSTEM, 0.5, 256, api_name="/chat")
    partial = answer_of(first)
    assert partial.strip() == "".join(f"w{i} " for i in range(15)).strip()
    assert any(title == FAILED_TITLE for title, _ in notes_of(first)), "the cut answer says so"

    history = [{"role": "user", "content": message}, *first]
    continued = client.predict(history, GPT, SYSTEM, 0.5, 256, api_name="/continue")

    answers = [m for m in continued if m["role"] == "assistant" and not (m.get("metadata") or {}).get("title")]
    assert len(answers) == 1, "the same message grew; no new message"
    assert answers[0]["content"].strip() == FULL, "continued from where it stopped, nothing repeated"
    titles = [title for title, _ in notes_of(continued)]
    assert FAILED_TITLE in titles and any(t.startswith("⏩ Continued by Wire GPT") for t in titles)
    assert continued[0] == history[0] and len(continued) == len(history) + 1  # one note more

    sent = requests_for(wire, marker)
    assert len(sent) == 2
    roles = [m["role"] for m in sent[1].body["messages"] if m["role"] != "system"]
    assert roles[-2:] == ["assistant", "user"] and "<tail>" in sent[1].body["messages"][-1]["content"]


def test_continue_with_no_user_message_says_what_is_wrong(app):
    url, _ = app
    with pytest.raises(Exception, match="no answer to continue"):
        Client(url, verbose=False).predict([], GPT, SYSTEM, 0.5, 256, api_name="/continue")
