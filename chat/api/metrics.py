"""Prometheus metrics of the API, in a registry of their own.

Labels take values from bounded sets only: API route paths, catalogue model
ids (plus ``auto`` and ``none``), the outcomes in ``chat.api.errors.OUTCOMES``,
the error classes' plain ``reason`` words, and the caller's name from the edge
(``anonymous`` until issue #9 brings named keys). Nothing a client types ever
becomes a label.

    relay_api_requests_total{route, model, outcome, caller}
    relay_api_time_to_first_token_seconds{model}        histogram
    relay_api_request_duration_seconds{route, model}    histogram
    relay_api_tokens_total{model, direction}            direction: input | output
    relay_api_fallbacks_total{model, reason}            the model that failed, and why
    relay_api_active_streams                            gauge
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..errors import ProviderError

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "reason_label"]

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


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


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("relay_api_requests", "API requests by route, model and outcome",
                                ["route", "model", "outcome", "caller"], registry=r)
        self.ttft = Histogram("relay_api_time_to_first_token_seconds",
                              "Seconds from the request to the first text of the answer",
                              ["model"], buckets=_TTFT_BUCKETS, registry=r)
        self.duration = Histogram("relay_api_request_duration_seconds", "Seconds from the request to its last byte",
                                  ["route", "model"], buckets=_DURATION_BUCKETS, registry=r)
        self.tokens = Counter("relay_api_tokens", "Tokens the providers reported, by model",
                              ["model", "direction"], registry=r)
        self.fallbacks = Counter("relay_api_fallbacks", "Models that failed and handed the answer on, by reason",
                                 ["model", "reason"], registry=r)
        self.active_streams = Gauge("relay_api_active_streams", "Streaming responses open now", registry=r)

    def request(self, route: str, model: str, outcome: str, caller: str, seconds: float) -> None:
        self.requests.labels(route, model, outcome, caller).inc()
        self.duration.labels(route, model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
