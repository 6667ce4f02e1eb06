"""Shared pieces of the end-to-end tests: the real app (``python app.py``) in front
of a ``WireServer`` that speaks the OpenAI, Anthropic and Ollama wire protocols.

The tests talk to the app only as a user's browser or script would: the
``/chat`` and ``/refresh_models`` API routes (``gradio_client`` and plain HTTP)
and the page config. Whatever the app sent upstream is read back from the wire
server's records, so each test can check both ends of the pipe.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from gradio_client import Client

from tests.conftest import free_port
from tests.servers import app_process
from tests.wire import Recorded, WireServer

__all__ = [
    "CATALOGUE",
    "SYSTEM",
    "Outcome",
    "answer_of",
    "chat",
    "choices",
    "closed_port",
    "model_of",
    "notes_of",
    "queue_chat",
    "refresh",
    "requests_for",
    "run_app",
    "tag",
    "user_texts",
    "wait_for",
    "wait_ready",
    "wire_env",
    "write_catalogue",
]

SYSTEM = "Be brief."

# Two cloud models on the wire server, a premium model only the cooldown test
# uses (no fallback list names it, so its bench cannot change other tests'
# chains), and the embedded model placed in a tier of its own so it is reached
# only through the fallback list, where it is last. Ollama models are not
# listed: they come from discovery (/api/tags).
CATALOGUE = """\
[[models]]
id = "openai:wire-gpt"
label = "Wire GPT"
tier = "fast"
context_window = 16000

[[models]]
id = "anthropic:wire-claude"
label = "Wire Claude"
tier = "fast"
context_window = 16000

[[models]]
id = "openai:wire-cool"
label = "Wire Cool"
tier = "premium"
context_window = 16000

[[models]]
id = "local:smollm2"
label = "SmolLM2 135M (embedded)"
tier = "premium"
context_window = 8192
max_output_tokens = 1024

[routing]
fallback = ["openai:wire-gpt", "anthropic:wire-claude", "ollama:llama3.2:latest", "local:smollm2"]
"""


def write_catalogue(directory: Path) -> Path:
    path = directory / "models.toml"
    path.write_text(CATALOGUE, encoding="utf-8")
    return path


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    return free_port()


def wire_env(wire: WireServer, catalogue: Path, key: str, **settings: str) -> dict[str, str]:
    """The environment that points every provider of ``python app.py`` at ``wire``."""
    return {
        "OPENAI_BASE_URL": wire.openai_base_url,
        "OPENAI_API_KEY": key,
        "ANTHROPIC_BASE_URL": wire.url,
        "ANTHROPIC_API_KEY": key,
        "OLLAMA_HOST": wire.url,
        "CHAT_MODELS_FILE": str(catalogue),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **settings,
    }


@contextmanager
def run_app(env: dict[str, str], cwd: Path, log_path: Path) -> Iterator[str]:
    """``python app.py`` with ``env``; its stdout and stderr go to ``log_path``.

    ``cwd`` is a fresh directory: no developer ``.env`` is read and the app's
    ``.gradio/`` state stays out of the repository.
    """
    with app_process(free_port(), env=env, cwd=cwd, log_path=log_path) as url:
        refresh(url)  # what the page does on load: discover Ollama models
        yield url


# -- the /refresh_models route ---------------------------------------------------


def refresh(url: str, current: str = "auto") -> dict[str, Any]:
    """Press "↻ Refresh models": the dropdown update the browser receives.

    Through the raw route rather than ``gradio_client``, which keeps only a
    component's value: the update carries the choices and the help line.
    """
    response = httpx.post(url + "gradio_api/run/refresh_models", json={"data": [current]}, timeout=30)
    response.raise_for_status()
    update = response.json()["data"][0]
    assert update.get("__type__") == "update", update
    return update


def choices(url: str) -> dict[str, str]:
    """The model menu after a refresh, as ``{model id: label}``."""
    return {value: label for label, value in refresh(url)["choices"]}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_ready(url: str, model_id: str, timeout: float = 90) -> None:
    """Wait until the menu lists ``model_id`` as ready (the embedded model loads in the background)."""
    def ready() -> bool:
        label = choices(url).get(model_id)
        return label is not None and " — " not in label

    wait_for(ready, timeout, f"{model_id} to be ready", interval=0.3)


# -- the /chat route -------------------------------------------------------------


@dataclass
class Outcome:
    """One /chat call: every streamed update, the result or error, and timings."""

    updates: list[tuple[float, list[dict[str, Any]]]] = field(default_factory=list)
    result: list[dict[str, Any]] | None = None
    error: Exception | None = None
    started: float = 0.0
    ended: float = 0.0

    @property
    def last(self) -> list[dict[str, Any]]:
        """The last messages the user saw (the result, or the last update before an error)."""
        if self.result is not None:
            return self.result
        return self.updates[-1][1] if self.updates else []

    @property
    def answer(self) -> str:
        return answer_of(self.last)

    def growing(self) -> list[str]:
        """The answer text of each update that had one, in order."""
        return [text for text in (answer_of(out) for _, out in self.updates) if text]

    @property
    def titles(self) -> list[str]:
        return [title for title, _ in notes_of(self.last)]

    @property
    def elapsed(self) -> float:
        return self.ended - self.started

    def payload_text(self) -> str:
        """Every payload received, as JSON text (for scanning)."""
        parts = [json.dumps(out, ensure_ascii=False) for _, out in self.updates]
        parts.append(json.dumps(self.result, ensure_ascii=False))
        if self.error is not None:
            parts.append(str(self.error))
        return "\n".join(parts)


def tag() -> str:
    """A unique word to find this test's requests among the wire server's records."""
    return "t" + uuid.uuid4().hex[:10]


def chat(url: str, message: str, model: str, *, max_tokens: int = 256, timeout: float = 60) -> Outcome:
    """Send ``message`` to ``model`` through /chat and collect everything that comes back."""
    client = Client(url, verbose=False)
    outcome = Outcome(started=time.monotonic())
    job = client.submit(message, model, SYSTEM, 0.5, max_tokens, api_name="/chat")
    seen = 0
    deadline = time.monotonic() + timeout
    # Poll the job's outputs rather than iterating it, so an error cannot hide
    # the updates that came before it.
    while not job.done():
        seen = _collect(job, outcome, seen)
        if time.monotonic() > deadline:
            job.cancel()
            raise AssertionError(f"/chat did not finish within {timeout} s")
        time.sleep(0.02)
    outcome.ended = time.monotonic()
    try:
        outcome.result = job.result()
    except Exception as exc:  # the test inspects it
        outcome.error = exc
    _collect(job, outcome, seen)
    return outcome


def _collect(job: Any, outcome: Outcome, seen: int) -> int:
    outputs = job.outputs()
    now = time.monotonic()
    for out in outputs[seen:]:
        outcome.updates.append((now, out))
    return len(outputs)


def answer_of(messages: Iterable[dict[str, Any]]) -> str:
    """The answer is the last message without a note title."""
    plain = [m for m in messages if not (m.get("metadata") or {}).get("title")]
    return str(plain[-1]["content"]) if plain else ""


def notes_of(messages: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(title, content)`` of every note (messages with ``metadata.title``)."""
    return [
        (str(m["metadata"]["title"]), str(m.get("content", "")))
        for m in messages
        if (m.get("metadata") or {}).get("title")
    ]


def queue_chat(url: str, message: str, model: str, *, max_tokens: int = 256,
               timeout: float = 60) -> list[dict[str, Any]]:
    """Send ``message`` through Gradio's queue protocol, as the page does, and
    return every server message (``process_generating``, ``log`` toasts,
    ``process_completed``). ``gradio_client`` keeps no toasts; this does.
    """
    config = httpx.get(url + "config", timeout=10).json()
    fn_index = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "chat")
    session = uuid.uuid4().hex
    joined = httpx.post(url + "gradio_api/queue/join", timeout=10, json={
        "data": [message, [], model, SYSTEM, 0.5, max_tokens],
        "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None,
    })
    joined.raise_for_status()
    received: list[dict[str, Any]] = []
    with httpx.stream("GET", url + f"gradio_api/queue/data?session_hash={session}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            received.append(json.loads(line[5:]))
            if received[-1].get("msg") in ("process_completed", "close_stream"):
                break
    return received


# -- what the wire server received ---------------------------------------------


def user_texts(record: Recorded) -> list[str]:
    body = record.body if isinstance(record.body, dict) else {}
    out = []
    for message in body.get("messages") or []:
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            out.append(str(content))
    return out


def requests_for(wire: WireServer, marker: str) -> list[Recorded]:
    """The chat requests (in order) whose conversation contains ``marker``."""
    return [r for r in wire.chat_requests if any(marker in text for text in user_texts(r))]


def model_of(record: Recorded) -> str:
    return str((record.body or {}).get("model", ""))
