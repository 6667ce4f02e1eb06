"""Shared pieces of the API tests: reading a streamed Chat Completions answer as
a client does, with the time each line arrived, and reading /metrics."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Streamed", "metric", "post_stream"]


@dataclass
class Streamed:
    """One streamed response: status, headers, and every non-blank line with
    the seconds since the request was sent."""

    status: int
    headers: httpx.Headers
    headers_at: float
    lines: list[tuple[float, str]] = field(default_factory=list)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The JSON documents of the ``data:`` lines (not ``[DONE]``)."""
        return [json.loads(line[5:]) for _, line in self.lines
                if line.startswith("data:") and line[5:].strip() != "[DONE]"]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("object") == "chat.completion.chunk"]

    @property
    def text(self) -> str:
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in self.chunks if c["choices"])

    @property
    def notices(self) -> list[dict[str, Any]]:
        return [n for c in self.chunks for n in (c.get("relay") or {}).get("notices", [])]

    def first(self, predicate) -> float | None:
        return next((t for t, line in self.lines if predicate(line)), None)


def post_stream(url: str, body: dict[str, Any], *, timeout: float = 60, stop_after_text: int | None = None
                ) -> Streamed:
    """POST ``body`` with ``stream: true``; read to the end, or disconnect once
    ``stop_after_text`` characters of answer text have arrived."""
    started = time.monotonic()
    with httpx.Client(timeout=timeout) as client:
        with client.stream("POST", url + "v1/chat/completions", json={**body, "stream": True}) as response:
            out = Streamed(response.status_code, response.headers, time.monotonic() - started)
            if response.status_code != 200:
                response.read()
                out.lines.append((time.monotonic() - started, response.text))
                return out
            for line in response.iter_lines():
                if line:
                    out.lines.append((time.monotonic() - started, line))
                if stop_after_text is not None and len(out.text) >= stop_after_text:
                    break
    return out


def metric(url: str, name: str, *, key: str | None = None, **labels: str) -> float:
    """The value of one sample of /metrics (0 when absent), summed over the
    labels not given; ``key``: the API key /metrics needs when keys are set."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    text = httpx.get(url + "metrics", headers=headers, timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
