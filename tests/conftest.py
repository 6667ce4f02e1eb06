"""Test isolation and shared fixtures.

Every test runs with no provider keys, no developer ``.env`` and Gradio's
network chatter off, so the suite behaves the same offline on any machine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Set before anything imports gradio.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["CHAT_ENV_FILE"] = ""
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"

_SCRUB = (
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
    "OLLAMA_HOST", "OLLAMA_API_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "ANTHROPIC_AUTH_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
)
for _name in list(os.environ):
    if _name in _SCRUB or (_name.startswith("CHAT_") and _name != "CHAT_ENV_FILE"):
        del os.environ[_name]

from tests.servers import debian_binary, free_port  # noqa: E402,F401 - free_port: tests import it from here

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The process environment with no provider or CHAT_ variables."""
    for name in list(os.environ):
        if name in _SCRUB or (name.startswith("CHAT_") and name != "CHAT_ENV_FILE"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHAT_ENV_FILE", "")
    yield monkeypatch


@pytest.fixture
def settings_factory(clean_env: pytest.MonkeyPatch):
    from chat.config import Settings

    def make(**overrides: object) -> Settings:
        return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]

    return make


@pytest.fixture(scope="session")
def local_provider():
    """The real embedded model, loaded once for the whole session (pool of 2)."""
    from chat.config import Settings
    from chat.providers.local import LocalProvider

    provider = LocalProvider(Settings(_env_file=None, local_pool_size=2))  # type: ignore[call-arg]
    provider.wait_ready(timeout=120)
    return provider


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# -- real browser -------------------------------------------------------------

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    """Debian's Chromium, installed with apt-get when missing and we are root."""
    try:
        return debian_binary("chromium", "chromium")
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, one per test module."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=ARGS)
        yield browser
        browser.close()


def send(page, box, text: str) -> None:
    """Type and press Enter, as a user would; press again if the page had not
    wired its handlers yet (the textarea can appear before the app is live)."""
    box.fill(text)
    for _ in range(3):
        box.press("Enter")
        try:
            page.get_by_text(text[:40], exact=False).first.wait_for(timeout=5_000)
            return
        except Exception:  # not sent yet
            if box.input_value() != text:
                raise
    raise AssertionError("the message was never sent")
