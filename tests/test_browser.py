"""A real user in a real browser: Playwright driving Debian's Chromium against
``python app.py`` started as the README says, answering with the embedded model."""

from __future__ import annotations

import time

import pytest

from tests.conftest import free_port, send
from tests.servers import app_process

pytestmark = [pytest.mark.browser, pytest.mark.model]

@pytest.fixture(scope="module")
def app_url(tmp_path_factory, artifacts_dir):
    cwd = tmp_path_factory.mktemp("app-cwd")  # no .env here, and a fresh .gradio/
    with app_process(free_port(), cwd=cwd, log_path=artifacts_dir / "browser-app.log") as url:
        yield url


def bot_text(page) -> str:
    """All assistant text on the page (notes and answers)."""
    return "\n".join(page.locator('[data-testid="bot"]').all_inner_texts())


ANSWER_TEXT_JS = """() => {
  const answers = [...document.querySelectorAll('[data-testid="bot"]')]
    .filter((b) => !b.querySelector('.thought-group'));
  return answers.length ? answers[answers.length - 1].innerText : "";
}"""


def answer_text(page) -> str:
    """The last answer's text, notes left out: a note (a collapsible block with
    live figures) is the last bubble until the first text shows, and it changes
    as it settles."""
    return page.evaluate(ANSWER_TEXT_JS)


def test_send_watch_it_stream_then_stop(browser, app_url, artifacts_dir):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_url, wait_until="load")
    box = page.locator("textarea").first
    box.wait_for(timeout=30_000)
    send(page, box, "Write a long story about a brave knight and a dragon.")

    page.locator('[data-testid="stop-button"]').wait_for(timeout=30_000)
    lengths = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(set(lengths)) < 4:
        lengths.append(len(answer_text(page)))
        time.sleep(0.25)
    growth = sorted(set(lengths))
    assert len(growth) >= 4, f"the answer did not grow in the page: {lengths}"
    assert lengths == sorted(lengths), "the answer only grows while streaming"
    assert "SmolLM2" in page.locator('[data-testid="bot"]').first.inner_text(), "the model is named"

    page.locator('[data-testid="stop-button"]').click()
    page.locator('[data-testid="stop-button"]').wait_for(state="detached", timeout=5_000)
    time.sleep(0.3)
    after_stop = len(answer_text(page))
    time.sleep(1.0)
    assert len(answer_text(page)) == after_stop, "text kept arriving after Stop"
    assert after_stop > 0, "the partial answer stays on screen after Stop"
    after_stop = len(bot_text(page))
    page.screenshot(path=str(artifacts_dir / "browser-chat-stopped.png"), full_page=True)

    # The next message is answered normally.
    send(page, box, "Say hello.")
    page.locator('[data-testid="user"]').nth(1).wait_for(timeout=10_000)
    page.wait_for_function(
        "(n) => !document.querySelector('[data-testid=\"stop-button\"]') && "
        "[...document.querySelectorAll('[data-testid=\"bot\"]')].map(e => e.innerText).join('\\n').length > n",
        arg=after_stop + 80,  # the second answer's model note and text
        timeout=60_000,
    )
    assert len(bot_text(page)) > after_stop
    page.screenshot(path=str(artifacts_dir / "browser-chat.png"), full_page=True)

    # History survives a reload (kept in the browser).
    page.reload(wait_until="load")
    page.get_by_text("Write a long story about a brave knight", exact=False).first.wait_for(timeout=15_000)
    page.close()
