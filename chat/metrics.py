"""Prometheus metrics of the service (``GET /metrics``), in a registry of their own.

Two surfaces answer: the API (``relay_api_*``, counted per HTTP request by the
route wrapper) and the page (``relay_page_*``, counted per answer: a message
sent, a Continue, or a call of Gradio's ``/chat`` and ``/continue`` routes).
Each surface has the same per-answer families (``AnswerFamilies``).

Labels take values from bounded sets only: API route paths, catalogue model
ids (plus ``auto`` and ``none``), the outcomes listed below, the error
classes' plain ``reason`` words, and the caller's name from the edge (a named
API key's name, or ``anonymous``). Nothing a client types ever becomes a label.

    relay_api_requests_total{route, model, outcome, caller}
    relay_api_request_duration_seconds{route, model}     histogram
    relay_api_time_to_first_token_seconds{model}         histogram
    relay_api_tokens_total{model, direction}             direction: input | output
    relay_api_fallbacks_total{model, reason}             the model that failed, and why
    relay_api_active_streams                             gauge

    relay_page_answers_total{model, outcome}             ok | stopped | failed | bad_request | refused | internal_error
    relay_page_answer_duration_seconds{model}            histogram
    relay_page_time_to_first_token_seconds{model}        histogram
    relay_page_tokens_total{model, direction}
    relay_page_fallbacks_total{model, reason}
    relay_page_active_answers                            gauge

``model`` is the model whose text starts the answer (the last one tried when
none wrote, ``none`` when none was chosen). Tokens are the providers' reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .errors import ProviderError

__all__ = ["CONTENT_TYPE_LATEST", "PAGE_OUTCOMES", "AnswerFamilies", "Metrics", "reason_label"]

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

PAGE_OUTCOMES = ("ok", "stopped", "failed", "bad_request", "refused", "internal_error")


def _reasons() -> list[str]:
    found: set[str] = set()
    todo: list[type[ProviderError]] = [ProviderError]
    while todo:
        cls = todo.pop()
        found.add(cls.reason)
        todo.extend(cls.__subclasses__())
    return sorted(found, key=len, reverse=True)


def reason_label(description: str) -> str:
    """The error class's plain reason a ``describe()`` text starts with, else "other"."""
    for reason in _reasons():
        if description.startswith(reason):
            return reason
    return "other"


class AnswerFamilies:
    """The per-answer families of one surface: first-token time, tokens, fallbacks."""

    def __init__(self, surface: str, registry: CollectorRegistry) -> None:
        prefix = f"relay_{surface}"
        self.ttft = Histogram(f"{prefix}_time_to_first_token_seconds",
                              "Seconds from the request to the first text of the answer",
                              ["model"], buckets=_TTFT_BUCKETS, registry=registry)
        self.tokens = Counter(f"{prefix}_tokens", "Tokens the providers reported, by model",
                              ["model", "direction"], registry=registry)
        self.fallbacks = Counter(f"{prefix}_fallbacks", "Models that failed and handed the answer on, by reason",
                                 ["model", "reason"], registry=registry)

    def observe(self, first_model: str | None, ttft: float | None, tokens: Mapping[str, tuple[int, int]],
                fallbacks: Iterable[tuple[str, str]]) -> None:
        """One answer: ``tokens`` maps model → (input, output) as reported;
        ``fallbacks`` lists (failed model, its ``describe()`` text)."""
        if ttft is not None and first_model:
            self.ttft.labels(first_model).observe(ttft)
        for model_id, (tokens_in, tokens_out) in tokens.items():
            if tokens_in:
                self.tokens.labels(model_id, "input").inc(tokens_in)
            if tokens_out:
                self.tokens.labels(model_id, "output").inc(tokens_out)
        for failed, reason in fallbacks:
            self.fallbacks.labels(failed, reason_label(reason)).inc()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("relay_api_requests", "API requests by route, model and outcome",
                                ["route", "model", "outcome", "caller"], registry=r)
        self.duration = Histogram("relay_api_request_duration_seconds", "Seconds from the request to its last byte",
                                  ["route", "model"], buckets=_DURATION_BUCKETS, registry=r)
        self.api = AnswerFamilies("api", r)
        self.active_streams = Gauge("relay_api_active_streams", "Streaming responses open now", registry=r)

        self.page_answers = Counter("relay_page_answers", "Answers streamed to the page, by model and outcome",
                                    ["model", "outcome"], registry=r)
        self.page_duration = Histogram("relay_page_answer_duration_seconds",
                                       "Seconds from the message to the end of its answer",
                                       ["model"], buckets=_DURATION_BUCKETS, registry=r)
        self.page = AnswerFamilies("page", r)
        self.page_active = Gauge("relay_page_active_answers", "Answers streaming to the page now", registry=r)

    def request(self, route: str, model: str, outcome: str, caller: str, seconds: float) -> None:
        self.requests.labels(route, model, outcome, caller).inc()
        self.duration.labels(route, model).observe(seconds)

    def page_answer(self, model: str, outcome: str, seconds: float | None) -> None:
        """One page answer ended (``seconds`` None: refused before it began)."""
        self.page_answers.labels(model, outcome).inc()
        if seconds is not None:
            self.page_duration.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
