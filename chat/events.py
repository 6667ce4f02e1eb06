"""Typed, immutable events that flow from providers up to the UI.

A provider's stream yields ``TextDelta`` (zero or more), optionally ``Usage``,
and ends with exactly one ``Finish``; it raises a ``chat.errors.ProviderError``
on failure. The router and context manager add their own notices on the way up.
Consumers ``match`` on the class.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Cached",
    "ContextTrimmed",
    "Event",
    "FallingBack",
    "Finish",
    "InputEstimate",
    "ModelSelected",
    "Progress",
    "Retrying",
    "SummaryInUse",
    "Summarizing",
    "TextDelta",
    "Usage",
]


# -- from providers ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer, in order. Never empty."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts the provider reported for this call."""

    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """The stream ended normally. ``reason``: "stop", "length", ... as the provider said."""

    reason: str = "stop"


@dataclass(frozen=True, slots=True)
class Progress:
    """The provider is working on the request but has no text yet (waiting for a
    free model instance, reading a long prompt). It restarts the router's
    first-token clock: real progress is not a stall."""

    detail: str


# -- from the router --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelSelected:
    """The router is about to stream from ``model_id``.

    ``tier`` is set when Auto chose it; ``reason`` says why in plain words.
    """

    model_id: str
    label: str
    tier: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Retrying:
    """The same model is retried after ``delay`` seconds."""

    model_id: str
    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class FallingBack:
    """``failed_model`` failed for ``reason``; ``next_model`` takes over.

    ``continuing`` is true when the next model continues a partial answer.
    """

    failed_model: str
    reason: str
    next_model: str
    continuing: bool = False


# -- from context management ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summarizing:
    """Older turns are being folded into the rolling summary."""

    turns: int


@dataclass(frozen=True, slots=True)
class SummaryInUse:
    """The request carries a summary of the ``turns`` oldest turns."""

    turns: int
    text: str


@dataclass(frozen=True, slots=True)
class ContextTrimmed:
    """``turns`` oldest turns were dropped without a summary (``reason`` says why)."""

    turns: int
    reason: str


# -- from the service -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputEstimate:
    """The service's estimate of the input tokens of the request it sends (for
    live figures: providers report the real count in ``Usage``, most only at
    the end of the answer)."""

    tokens: int


@dataclass(frozen=True, slots=True)
class Cached:
    """This answer is a replay of a complete answer stored ``age`` seconds ago
    (the response cache): no model is called. The token counts are the
    original answer's; nothing is spent on this one."""

    age: float
    input_tokens: int | None = None
    output_tokens: int | None = None


Event = (
    TextDelta
    | Usage
    | Finish
    | Progress
    | ModelSelected
    | Retrying
    | FallingBack
    | Summarizing
    | SummaryInUse
    | ContextTrimmed
    | InputEstimate
    | Cached
)
