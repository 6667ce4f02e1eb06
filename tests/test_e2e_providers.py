"""Issue 3 end to end: ``python app.py`` in front of local servers that speak the
OpenAI, Anthropic and Ollama wire protocols, driven through its /chat and
/refresh_models routes as a user's script would, and through a real Chromium.

Two app processes: one with every provider pointed at the wire server (and the
embedded model as the last fallback), and one with nothing configured at all.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e_support import (
    SYSTEM,
    chat,
    choices,
    closed_port,
    model_of,
    refresh,
    requests_for,
    run_app,
    tag,
    user_texts,
    wait_ready,
    wire_env,
    write_catalogue,
)
from tests.conftest import send
from tests.wire import WireServer

pytestmark = pytest.mark.model  # the embedded model answers in some of these tests

PLANTED = "sk-PLANTED-e2e-SECRET-42"
TOKENS = [f"w{i} " for i in range(24)]
ANSWER = "".join(TOKENS)


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    with WireServer(ollama_models=["llama3.2:latest"]) as server:
        yield server


@pytest.fixture(scope="module")
def app(wire: WireServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The app with every provider on the wire server; ``(url, log path)``."""
    cwd = tmp_path_factory.mktemp("providers-app")
    log_path = cwd / "app.log"
    env = wire_env(
        wire, write_catalogue(cwd), PLANTED,
        # Debug logging from every library, so the key scan covers what the
        # SDKs and HTTP clients would log about a request.
        CHAT_LOG_LEVEL="DEBUG",
        # A failed model is not benched here: each test starts from a clean slate.
        CHAT_COOLDOWN_SECONDS="0",
        # Room for every wire model plus the embedded model at the end of the chain.
        CHAT_FALLBACK_DEPTH="6",
        CHAT_LOCAL_POOL_SIZE="1",
    )
    with run_app(env, cwd, log_path) as url:
        yield url, log_path


@pytest.fixture(scope="module")
def bare_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with no keys, no catalogue file and no Ollama (a closed port)."""
    cwd = tmp_path_factory.mktemp("bare-app")
    env = {"OLLAMA_HOST": f"http://127.0.0.1:{closed_port()}", "CHAT_LOCAL_POOL_SIZE": "1"}
    with run_app(env, cwd, cwd / "app.log") as url:
        yield url


def system_of(record) -> str:
    body = record.body
    if isinstance(body.get("system"), str):  # Anthropic
        return body["system"]
    first = body["messages"][0]
    return first["content"] if first["role"] == "system" else ""


@pytest.mark.parametrize(
    ("model", "protocol", "upstream_name"),
    [
        ("openai:wire-gpt", "openai", "wire-gpt"),
        ("anthropic:wire-claude", "anthropic", "wire-claude"),
        ("ollama:llama3.2:latest", "ollama", "llama3.2:latest"),  # discovered, not in the file
    ],
    ids=["openai", "anthropic", "ollama"],
)
def test_answer_streams_from_each_provider(app, wire, model, protocol, upstream_name):
    url, _ = app
    marker = tag()
    message = f"Count for me {marker} [[tokens:24]] [[delay:0.03]]"
    outcome = chat(url, message, model)

    assert outcome.error is None, outcome.error
    assert outcome.answer == ANSWER
    texts = outcome.growing()
    assert len(texts) >= 3, f"the answer arrived in growing updates, not at once: {texts}"
    assert all(len(a) < len(b) for a, b in zip(texts, texts[1:])), texts
    assert all(ANSWER.startswith(t) for t in texts), "every update is a prefix of the answer"
    assert any(model in title for title in outcome.titles), f"the answer names its model: {outcome.titles}"

    [record] = requests_for(wire, marker)
    assert record.protocol == protocol
    assert model_of(record) == upstream_name
    assert user_texts(record)[-1] == message, "the user's message arrived as sent"
    assert system_of(record) == SYSTEM


@pytest.mark.browser
@pytest.mark.parametrize(
    ("model", "label", "upstream_name"),
    [
        ("openai:wire-gpt", "Wire GPT · openai:wire-gpt", "wire-gpt"),
        ("anthropic:wire-claude", "Wire Claude · anthropic:wire-claude", "wire-claude"),
        ("ollama:llama3.2:latest", "llama3.2:latest (Ollama) · ollama:llama3.2:latest", "llama3.2:latest"),
    ],
    ids=["openai", "anthropic", "ollama"],
)
def test_answer_streams_from_each_provider_in_the_browser(app, wire, browser, model, label, upstream_name):
    url, _ = app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(url, wait_until="load")
        menu = page.get_by_label("Model")
        menu.wait_for(timeout=30_000)
        menu.click()
        page.get_by_role("option", name=label).click()  # listed because the page load refreshed the menu
        marker = tag()
        box = page.locator("textarea").first
        send(page, box, f"Count in the browser {marker} [[tokens:24]] [[delay:0.05]]")

        bot = page.locator('[data-testid="bot"]')
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            texts = bot.all_inner_texts()
            answer = texts[-1].strip() if len(texts) >= 2 else ""  # the route note comes first
            if answer and (not seen or answer != seen[-1]):
                seen.append(answer)
            if answer == ANSWER.strip():
                break
            time.sleep(0.1)
        assert seen and seen[-1] == ANSWER.strip(), seen
        assert len(seen) >= 3, f"the answer grew on the page: {seen}"
        assert all(ANSWER.startswith(t) for t in seen), seen
        assert model in bot.first.inner_text(), "the page names the model that answered"
        [record] = requests_for(wire, marker)
        assert model_of(record) == upstream_name
    finally:
        page.close()


def test_ollama_models_are_discovered_live_and_refresh_finds_new_ones(app, wire):
    url, _ = app
    menu = choices(url)
    assert "ollama:llama3.2:latest" in menu, menu
    assert "ollama:wire-new:7b" not in menu

    wire.ollama_models.append("wire-new:7b")  # `ollama pull` while the app runs
    try:
        menu = choices(url)
        assert "ollama:wire-new:7b" in menu, "a refresh picks up the new model without a restart"
        assert " — " not in menu["ollama:wire-new:7b"], "and it is ready"

        marker = tag()
        outcome = chat(url, f"hello new model {marker}", "ollama:wire-new:7b")
        assert outcome.error is None, outcome.error
        assert outcome.answer == f"Echo: hello new model {marker}"
        assert [model_of(r) for r in requests_for(wire, marker)] == ["wire-new:7b"]
    finally:
        wire.ollama_models.remove("wire-new:7b")


def test_embedded_model_is_the_last_fallback(app, wire):
    url, _ = app
    wait_ready(url, "local:smollm2")
    marker = tag()
    # Unscoped: every wire model (OpenAI, Anthropic, Ollama) answers 503.
    outcome = chat(url, f"Say hello. {marker} [[fail:503]]", "openai:wire-gpt", max_tokens=16)

    assert outcome.error is None, outcome.error
    assert outcome.answer.strip(), "the embedded model answered"
    route = outcome.titles[0]
    assert "local:smollm2" in route and "after a fallback" in route, route
    asked = [model_of(r) for r in requests_for(wire, marker)]
    assert asked == ["wire-gpt", "wire-claude", "llama3.2:latest"], asked
    failures = [t for t in outcome.titles if "failed" in t]
    assert len(failures) == 3, failures
    assert failures[-1].startswith("⚠️ ollama:llama3.2:latest failed") and "local:smollm2" in failures[-1]


def test_planted_key_never_leaks(app, wire):
    url, log_path = app
    marker = tag()
    # Both keyed providers refuse the key; Ollama (no key) then answers.
    outcome = chat(url, f"hello {marker} [[fail:401@wire-gpt]] [[fail:401@wire-claude]]", "openai:wire-gpt")
    # The key really was sent upstream, so its absence everywhere else means something.
    sent = {model_of(r): r.headers for r in requests_for(wire, marker)}
    assert list(sent) == ["wire-gpt", "wire-claude", "llama3.2:latest"], list(sent)
    assert sent["wire-gpt"]["authorization"] == f"Bearer {PLANTED}"
    assert PLANTED in sent["wire-claude"].get("x-api-key", "") + sent["wire-claude"].get("authorization", "")
    refusals = [t for t in outcome.titles if "failed" in t]
    assert len(refusals) == 2 and all("401" in t or "authentication" in t.lower() for t in refusals), refusals
    assert outcome.answer.startswith("Echo: hello")

    payloads = outcome.payload_text()
    assert PLANTED not in payloads
    assert "PLANTED" not in payloads, "not even a recognisable fragment of the key"
    for route in ("config", "gradio_api/info"):
        page = httpx.get(url + route, timeout=10)
        assert page.status_code == 200, route
        assert PLANTED not in page.text, route
    assert PLANTED not in json.dumps(refresh(url), ensure_ascii=False)

    log = log_path.read_text(encoding="utf-8", errors="replace")
    assert "/v1/messages" in log and "401" in log, "the log captured these requests"
    assert PLANTED not in log
    assert "PLANTED" not in log


def test_no_keys_no_ollama_the_menu_says_why_and_local_answers(bare_app):
    url = bare_app
    update = refresh(url)
    menu = {value: label for label, value in update["choices"]}
    openai = [label for model, label in menu.items() if model.startswith("openai:")]
    anthropic = [label for model, label in menu.items() if model.startswith("anthropic:")]
    assert openai and anthropic, menu
    for label in openai:
        assert "missing key" in label and "OPENAI_API_KEY" in label, label
    for label in anthropic:
        assert "missing key" in label and "ANTHROPIC_API_KEY" in label, label
    assert not [m for m in menu if m.startswith("ollama:")]
    assert re.search(r"Ollama server unreachable .*OLLAMA_HOST", update["info"]), update["info"]

    wait_ready(url, "local:smollm2")
    outcome = chat(url, "Say hello.", "local:smollm2", max_tokens=12)
    assert outcome.error is None, outcome.error
    assert outcome.answer.strip()
    assert "local:smollm2" in outcome.titles[0]


def test_choosing_a_model_without_its_key_explains_and_local_answers(bare_app):
    url = bare_app
    model = next(m for m in choices(url) if m.startswith("openai:"))
    wait_ready(url, "local:smollm2")
    outcome = chat(url, "Say hello.", model, max_tokens=12)
    assert outcome.error is None, outcome.error
    assert outcome.answer.strip()
    why = [t for t in outcome.titles if t.startswith(f"⚠️ {model} failed")]
    assert why and "OPENAI_API_KEY" in why[0], outcome.titles
    assert "local:smollm2" in outcome.titles[0]
