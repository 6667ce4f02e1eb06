"""Live figures of one answer, from its events: the same numbers for the page's
note and the API's usage.

    ttft          seconds from the request to the first text
    duration      seconds from the request to the end (to now while streaming)
    tokens/s      output tokens / (duration - ttft): the speed once text flows
    input tokens  what the providers reported; the service's estimate
                  (``InputEstimate``) until a report arrives
    output tokens reported per model call; text no report covers yet (still
                  streaming, or a model cut off mid-answer) is estimated offline
    cost          USD from the catalogue's prices, per model that answered;
                  None when a model has no price; 0 for a cached answer
    models        every model that wrote part of the answer, in order
    fallbacks     (failed model, reason) of each fallback, in order (the metrics')

``estimated`` says some token count is an estimate (the page shows "~").

Per event the work is O(1) (text is kept as parts and estimated when figures
are asked for, at most once per page update), so the API's hot path stays
cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .catalogue import Catalogue
from .events import Cached, Event, FallingBack, Finish, InputEstimate, ModelSelected, TextDelta, Usage
from .tokens import estimate_tokens

__all__ = ["AnswerStats", "Figures"]

# Below this many seconds of streaming a rate says nothing (a cached replay, one token).
MIN_FLOWING = 0.05


@dataclass
class _Call:
    """One model's part of the answer (a new part starts at each ``ModelSelected``)."""

    model: str
    parts: list[str] = field(default_factory=list)  # text not yet estimated
    estimated: int = 0  # tokens of the text estimated so far
    wrote: bool = False
    input_tokens: int | None = None  # reported
    output_tokens: int | None = None  # reported

    def output(self) -> tuple[int, bool]:
        """(output tokens, whether estimated)."""
        if self.output_tokens is not None:
            return self.output_tokens, False
        if self.parts:
            self.estimated += estimate_tokens("".join(self.parts))
            self.parts.clear()
        return self.estimated, self.wrote


@dataclass(frozen=True, slots=True)
class Figures:
    ttft: float | None
    duration: float
    tokens_per_s: float | None
    input_tokens: int | None
    output_tokens: int
    estimated: bool
    cost: float | None
    models: tuple[str, ...]
    cached: bool = False

    def line(self) -> str:
        """The page's one-line summary, e.g. ``first token 0.42 s · 38.5 tok/s ·
        tokens 120 in / 256 out · $0.000171 · total 7.23 s``."""
        approx = "~" if self.estimated else ""
        parts: list[str] = []  # (a cached answer says so in its note's title)
        if self.ttft is not None:
            parts.append(f"first token {self.ttft:.2f} s")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.input_tokens is not None:
            parts.append(f"tokens {approx}{self.input_tokens:,} in / {approx}{self.output_tokens:,} out")
        elif self.output_tokens:
            parts.append(f"tokens {approx}{self.output_tokens:,} out")
        if self.cost is not None:
            parts.append(_money(self.cost, approx))
        parts.append(f"total {self.duration:.2f} s")
        if len(self.models) > 1:
            parts.append(" → ".join(self.models))
        return " · ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """The API's ``usage.relay`` object."""
        return {
            "ttft_s": _round(self.ttft), "duration_s": _round(self.duration),
            "tokens_per_s": _round(self.tokens_per_s, 1), "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens, "estimated": self.estimated,
            "cost_usd": None if self.cost is None else round(self.cost, 8),
            "models": list(self.models), "cached": self.cached,
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _money(cost: float, approx: str) -> str:
    if not cost:
        return "no cost"
    text = f"{cost:.6f}".rstrip("0").rstrip(".")
    return f"{approx}${text}" if text != "0" else f"{approx}< $0.000001"


class AnswerStats:
    def __init__(self, catalogue: Catalogue, *, clock: Callable[[], float] = time.monotonic,
                 started: float | None = None) -> None:
        """``started``: when the request began (default: now)."""
        self._catalogue = catalogue
        self._clock = clock
        self.started = clock() if started is None else started
        self.first_text_at: float | None = None
        self.ended_at: float | None = None
        self._calls: list[_Call] = []
        self._input_estimate: int | None = None
        self._cached: Cached | None = None
        self.fallbacks: list[tuple[str, str]] = []  # (failed model, reason)

    def apply(self, event: Event) -> None:
        if type(event) is TextDelta:
            call = self._calls[-1] if self._calls else self._start("")
            if self.first_text_at is None:
                self.first_text_at = self._clock()
            call.parts.append(event.text)
            call.wrote = True
            return
        match event:
            case ModelSelected(model_id=model_id):
                self._start(model_id)
            case Usage(input_tokens=tokens_in, output_tokens=tokens_out):
                call = self._calls[-1] if self._calls else self._start("")
                if tokens_in is not None:
                    call.input_tokens = (call.input_tokens or 0) + tokens_in
                if tokens_out is not None:
                    call.output_tokens = (call.output_tokens or 0) + tokens_out
            case InputEstimate(tokens=tokens):
                self._input_estimate = tokens
            case Cached():
                self._cached = event
            case Finish():
                self.ended_at = self._clock()
            case FallingBack(failed_model=failed, reason=reason):
                self.fallbacks.append((failed, reason))

    def _start(self, model_id: str) -> _Call:
        call = _Call(model_id)
        self._calls.append(call)
        return call

    @property
    def cached(self) -> bool:
        """Whether the answer is a replay from the response cache."""
        return self._cached is not None

    def end(self) -> None:
        """The answer is over (failed or stopped): the clock stops now, if no ``Finish`` stopped it."""
        if self.ended_at is None:
            self.ended_at = self._clock()

    def reported_tokens(self) -> dict[str, tuple[int, int]]:
        """Tokens the providers reported, per model: (input, output)."""
        out: dict[str, tuple[int, int]] = {}
        for call in self._calls:
            if call.model and (call.input_tokens is not None or call.output_tokens is not None):
                tokens_in, tokens_out = out.get(call.model, (0, 0))
                out[call.model] = (tokens_in + (call.input_tokens or 0), tokens_out + (call.output_tokens or 0))
        return out

    def models(self) -> tuple[str, ...]:
        """The models that wrote part of the answer, in order."""
        return tuple(dict.fromkeys(c.model for c in self._calls if c.wrote and c.model))

    def figures(self) -> Figures:
        now = self.ended_at if self.ended_at is not None else self._clock()
        ttft = None if self.first_text_at is None else self.first_text_at - self.started
        output, estimated, cost = 0, False, 0.0
        reported_input: int | None = None
        priced = True
        for call in self._calls:
            tokens_out, guessed = call.output()
            output += tokens_out
            estimated = estimated or guessed
            tokens_in = call.input_tokens or 0
            if call.input_tokens is not None:
                reported_input = (reported_input or 0) + call.input_tokens
            spec = self._catalogue.get(call.model)
            if spec is None or spec.input_cost_per_mtok is None or spec.output_cost_per_mtok is None:
                priced = priced and not (call.wrote or call.input_tokens)
                continue
            if call.input_tokens is None and call is self._calls[-1] and self._input_estimate:
                tokens_in = self._input_estimate  # still streaming: priced on the estimate
            cost += (tokens_in * spec.input_cost_per_mtok + tokens_out * spec.output_cost_per_mtok) / 1_000_000
        input_tokens = reported_input
        if input_tokens is None and self._input_estimate is not None and self._calls:
            input_tokens, estimated = self._input_estimate, True
        cached = self._cached
        if cached is not None:
            input_tokens = cached.input_tokens
            if cached.output_tokens is not None:
                output, estimated = cached.output_tokens, False
            cost = 0.0
        tokens_per_s = None
        if ttft is not None and output:
            flowing = now - self.first_text_at  # type: ignore[operator]
            if flowing >= MIN_FLOWING:
                tokens_per_s = output / flowing
        return Figures(
            ttft=ttft, duration=now - self.started, tokens_per_s=tokens_per_s, input_tokens=input_tokens,
            output_tokens=output, estimated=estimated, cost=cost if priced or cached else None,
            models=self.models() or tuple(c.model for c in self._calls if c.model)[-1:],
            cached=cached is not None,
        )
