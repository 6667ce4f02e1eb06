"""Issue 12 in a real browser: Playwright driving Debian's Chromium against
``python app.py`` in preview mode, in front of a wire server (its log says what
really went upstream). Screenshots land in test-artifacts/."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.conftest import send
from tests.e2e_support import requests_for, run_app, tag, user_texts, wire_env, write_catalogue
from tests.wire import Script, WireServer

pytestmark = pytest.mark.browser

TITLE = "Acme Assistant — preview"
EXAMPLES = ("Where is my order?", "How do I return a jacket?")
FIGURES = re.compile(
    r"first token (?P<ttft>\d+\.\d+) s · (?P<rate>\d+\.\d) tok/s · tokens (?P<est_in>~?)(?P<tin>[\d,]+) in / "
    r"(?P<est_out>~?)(?P<tout>[\d,]+) out · total (?P<total>\d+\.\d+) s"
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, artifacts_dir) -> Iterator[tuple[str, WireServer]]:
    cwd = tmp_path_factory.mktemp("preview-app")
    with WireServer() as wire:
        env = wire_env(
            wire, write_catalogue(cwd), "sk-test-preview", CHAT_LOCAL_MODEL_ENABLED="false",
            CHAT_OLLAMA_ENABLED="false", CHAT_TITLE=TITLE,
            CHAT_DESCRIPTION="Ask about **orders, returns and shipping**. Answers stream live, with their figures.",
            CHAT_EXAMPLES="|".join(EXAMPLES), CHAT_RESPONSE_CACHE_TTL="600",
        )
        with run_app(env, cwd, artifacts_dir / "browser-preview-app.log") as url:
            yield url, wire


@pytest.fixture
def page(browser, app):
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # a fresh context: an empty chat
    page.goto(app[0], wait_until="load")
    page.locator("textarea").first.wait_for(timeout=30_000)
    yield page
    page.close()


def bots(page) -> list[str]:
    return page.locator('[data-testid="bot"]').all_inner_texts()


def streaming(page) -> bool:
    return page.locator('[data-testid="stop-button"]').count() > 0


def wait_done(page, timeout: float = 30_000) -> None:
    page.locator('[data-testid="stop-button"]').first.wait_for(state="detached", timeout=timeout)
    time.sleep(0.3)


def test_title_description_and_examples_show_and_an_example_sends(page, app, artifacts_dir):
    url, wire = app
    assert page.title() == TITLE
    assert page.locator("#relay-header h1").inner_text().strip() == TITLE
    assert page.locator("#relay-header strong").inner_text() == "orders, returns and shipping"
    for example in EXAMPLES:
        page.get_by_text(example, exact=True).first.wait_for(timeout=10_000)
    page.screenshot(path=str(artifacts_dir / "preview-page.png"), full_page=True)

    before = len(wire.chat_requests)
    page.get_by_text(EXAMPLES[1], exact=True).first.click()
    page.locator('[data-testid="user"]').first.wait_for(timeout=10_000)
    assert page.locator('[data-testid="user"]').first.inner_text().strip() == EXAMPLES[1]
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"bot\"]')]"
                           ".some(e => e.innerText.includes('Echo: How do I return a jacket?'))", timeout=30_000)
    sent = [r for r in wire.chat_requests[before:] if EXAMPLES[1] in " ".join(user_texts(r))]
    assert len(sent) == 1, "the example was sent, once"
    # Like a typed one, a chat begun with an example is kept in the saved chats (the sidebar's table).
    page.locator("table").get_by_text(EXAMPLES[1]).first.wait_for(timeout=10_000)
    page.screenshot(path=str(artifacts_dir / "preview-example-answered.png"), full_page=True)


def test_figures_show_while_the_answer_streams_and_add_up(page, app, artifacts_dir):
    url, wire = app
    marker = tag()
    send(page, page.locator("textarea").first, f"[[tokens:60]] [[delay:0.05]] count {marker}")
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        live = streaming(page)
        texts = bots(page)
        if live and texts and (found := FIGURES.search(texts[0])):
            if not seen or seen[-1] != found.group(0):
                seen.append(found.group(0))
        if not live and seen:
            break
        time.sleep(0.1)
    assert len(seen) >= 2, f"the figures updated while the answer streamed: {seen}"
    assert FIGURES.search(seen[0])["est_out"] == "~", "while streaming, output tokens are an estimate"
    wait_done(page)
    final = FIGURES.search(bots(page)[0])
    assert final is not None, bots(page)
    ttft, rate, total = float(final["ttft"]), float(final["rate"]), float(final["total"])
    tokens_in, tokens_out = int(final["tin"].replace(",", "")), int(final["tout"].replace(",", ""))
    assert final["est_out"] == "" and tokens_out == 60, "the provider's own count once it reported"
    assert tokens_in > 0 and final["est_in"] == ""
    assert 0 < ttft < total, final.group(0)
    assert total >= 60 * 0.05 * 0.9, "60 tokens 50 ms apart take about 3 s"
    assert rate == pytest.approx(tokens_out / (total - ttft), rel=0.05, abs=0.2), "tokens/s = counted tokens / time"
    page.screenshot(path=str(artifacts_dir / "preview-figures.png"), full_page=True)


def test_continue_after_stop_extends_the_same_message_with_nothing_repeated(page, app, artifacts_dir):
    url, wire = app
    marker = tag()
    full = " ".join(f"w{i}" for i in range(80))
    send(page, page.locator("textarea").first, f"[[tokens:80]] [[delay:0.05]] count {marker}")
    page.wait_for_function("() => { const b = [...document.querySelectorAll('[data-testid=\"bot\"]')];"
                           " return b.length && b[b.length - 1].innerText.includes('w12'); }", timeout=30_000)
    assert not page.locator("#relay-continue").is_visible(), "no Continue while the answer streams"
    page.locator('[data-testid="stop-button"]').click()
    wait_done(page)
    page.locator("#relay-continue").wait_for(state="visible", timeout=5_000)
    stopped = bots(page)
    partial = stopped[-1].strip()
    assert "⏹ stopped" in stopped[0] and full.startswith(partial) and len(partial) < len(full)
    page.screenshot(path=str(artifacts_dir / "continue-stopped.png"), full_page=True)

    page.locator("#relay-continue").click()
    page.wait_for_function("(full) => { const b = [...document.querySelectorAll('[data-testid=\"bot\"]')];"
                           " return b.length && b[b.length - 1].innerText.trim() === full; }", arg=full,
                           timeout=30_000)
    wait_done(page)
    after = bots(page)
    assert after[-1].strip() == full, "the same answer grew to the whole text, nothing repeated"
    assert sum("w0 w1" in text for text in after) == 1, "no second answer message"
    assert len(page.locator('[data-testid="user"]').all()) == 1, "no new user message"
    assert any(text.startswith("⏩ Continued by") for text in after)
    assert not page.locator("#relay-continue").is_visible(), "a complete answer offers no Continue"
    sent = requests_for(wire, marker)
    assert len(sent) == 2 and sent[1].body["messages"][-2]["role"] == "assistant"
    assert sent[1].body["messages"][-2]["content"].strip() == partial, "the continuation starts where Stop left it"
    page.screenshot(path=str(artifacts_dir / "continue-continued.png"), full_page=True)


def test_a_repeated_question_is_answered_from_the_cache(page, app, artifacts_dir):
    url, wire = app
    question = f"What is the capital of France? {tag()}"
    box = page.locator("textarea").first
    send(page, box, question)
    wait_done(page)
    first = bots(page)
    assert "⚡ cached" not in first[0]
    page.get_by_role("button", name="New chat").click()
    page.wait_for_function("() => !document.querySelector('[data-testid=\"user\"]')", timeout=10_000)
    send(page, box, question)
    wait_done(page)
    second = bots(page)
    assert "⚡ cached" in second[0] and "no cost" in second[0], second[0]
    assert second[-1] == first[-1], "the same answer"
    assert len([r for r in wire.chat_requests if question in " ".join(user_texts(r))]) == 1, \
        "the upstream was called once"
    page.screenshot(path=str(artifacts_dir / "cache-hit.png"), full_page=True)


MARKDOWN = r"""Here is the area of a circle, three ways.

```python
def area(r):
    return 3.14159 * r ** 2
```

| shape | formula |
| --- | --- |
| circle | $\pi r^2$ |
| square | $a^2$ |

Euler's identity:

$$e^{i\pi} + 1 = 0$$

and inline, $x^2 + y^2 = z^2$ holds for right triangles. The end.
"""


def test_code_tables_and_latex_render_while_streaming_and_at_the_end(page, app, artifacts_dir):
    url, wire = app
    pieces = [MARKDOWN[i:i + 5] for i in range(0, len(MARKDOWN), 5)]
    wire.enqueue(Script(tokens=pieces, delay=0.06))
    send(page, page.locator("textarea").first, f"show me some maths {tag()}")
    answer = page.locator('[data-testid="bot"]').last
    page.wait_for_function("() => { const b = [...document.querySelectorAll('[data-testid=\"bot\"]')];"
                           " return b.length && b[b.length - 1].querySelector('.katex-display'); }", timeout=30_000)
    assert streaming(page), "still streaming: this is the render mid-answer"
    assert answer.locator("pre code").count() == 1 and "def area" in answer.locator("pre code").inner_text()
    assert answer.locator("table").count() == 1 and answer.locator("table tr").count() == 3
    assert answer.locator(".katex").count() >= 3  # two in the table, the display formula
    page.screenshot(path=str(artifacts_dir / "markdown-streaming.png"), full_page=True)
    wait_done(page)
    answer = page.locator('[data-testid="bot"]').last
    assert answer.locator("pre code").count() == 1 and answer.locator("table").count() == 1
    assert answer.locator(".katex-display").count() == 1 and answer.locator(".katex").count() >= 4
    assert "$" not in answer.inner_text(), "no raw LaTeX left"
    assert "The end." in answer.inner_text()
    page.screenshot(path=str(artifacts_dir / "markdown-final.png"), full_page=True)
