"""A locked stakeholder preview in a real browser: no model menu and no settings
on the page, every answer from ``CHAT_DEFAULT_MODEL`` (here the embedded model,
while cloud models on a wire server would be ready too), and the embedded
model's answers badged as an offline demo."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import send
from tests.e2e_support import run_app, tag, user_texts, wait_ready, wire_env, write_catalogue
from tests.wire import WireServer

pytestmark = [pytest.mark.browser, pytest.mark.model]

TITLE = "Acme Assistant — locked preview"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, artifacts_dir) -> Iterator[tuple[str, WireServer]]:
    cwd = tmp_path_factory.mktemp("locked-browser-app")
    with WireServer() as wire:
        env = wire_env(wire, write_catalogue(cwd), "sk-test-locked-page", CHAT_OLLAMA_ENABLED="false",
                       CHAT_LOCK_SETTINGS="true", CHAT_DEFAULT_MODEL="local:smollm2", CHAT_MAX_OUTPUT_TOKENS="48",
                       CHAT_TITLE=TITLE, CHAT_DESCRIPTION="Try the assistant. Settings are fixed for this preview.")
        with run_app(env, cwd, artifacts_dir / "browser-locked-app.log") as url:
            wait_ready(url, "local:smollm2")
            yield url, wire


def test_settings_are_hidden_and_the_default_model_answers_with_its_badge(browser, app, artifacts_dir):
    url, wire = app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url, wait_until="load")
    box = page.locator("textarea").first
    box.wait_for(timeout=30_000)
    assert page.locator("#relay-header h1").inner_text().strip() == TITLE
    # (Each of these is found on an unlocked page.)
    assert page.get_by_label("Model", exact=True).count() == 0, "no model menu"
    assert page.get_by_text("System prompt, temperature, max output tokens").count() == 0, \
        "no settings (system prompt, temperature, max output tokens)"
    assert page.locator("textarea").count() == 1, "only the message box: no system prompt field"
    assert page.get_by_role("button", name="↻ Refresh models").count() == 0
    page.screenshot(path=str(artifacts_dir / "locked-page.png"), full_page=True)

    marker = tag()
    send(page, box, f"Say hello to the team. {marker}")
    page.locator('[data-testid="stop-button"]').wait_for(timeout=30_000)
    page.locator('[data-testid="stop-button"]').wait_for(state="detached", timeout=90_000)
    notes = page.locator('[data-testid="bot"]').all_inner_texts()
    assert "SmolLM2 135M (embedded) (local:smollm2)" in notes[0], notes
    assert "🧪 offline demo model — limited answers" in notes[0], "the embedded model's answer is badged"
    assert notes[-1].strip(), "it answered"
    assert not [r for r in wire.chat_requests if marker in " ".join(user_texts(r))], \
        "no cloud model was asked, though Auto would have picked one"
    page.screenshot(path=str(artifacts_dir / "locked-badge.png"), full_page=True)
    page.close()
