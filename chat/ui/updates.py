"""One answer as page updates: typed events in, lists of message dicts out.

The chat handlers (send, and any later action that streams an answer) share
this loop: events are coalesced and paced (``chat.streaming``), rendered by
``chat.render.AnswerView``, and a model failure ends the answer with a note
and a toast instead of an error overlay.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from ..catalogue import Catalogue
from ..errors import ChatError, InputError, ProviderError
from ..events import Event
from ..metrics import Metrics
from ..render import AnswerView
from ..streaming import Pacer, coalesce

__all__ = ["NOTE_DELAY", "answer_updates", "count_answer"]

NOTE_DELAY = 0.25  # seconds a notes-only update may wait for the first text


async def answer_updates(
    events: AsyncIterator[Event], catalogue: Catalogue, pacer: Pacer, *, view: AnswerView | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    """The page updates of one answer, from the service's ``events``.

    ``view``: the view to render into (Continue passes one holding the answer so far)."""
    view = view or AnswerView(catalogue)
    try:
        started = time.monotonic()
        shown = held = False
        with pacer.streaming():
            updates = coalesce(events, lambda: pacer.interval(len(view.text)), idle=NOTE_DELAY)
            async for batch in updates:
                for event in batch:
                    view.apply(event)
                if not batch and shown:
                    continue  # an idle tick with nothing new
                if not view.text and time.monotonic() - started < NOTE_DELAY:
                    # Text usually follows within a blink: one update instead
                    # of two (each yield costs a round of Gradio processing).
                    held = True
                    continue
                shown, held = True, False
                yield view.messages()
        if held or view.finish_reason is None:
            # Ended quickly with no text, or with no end marker shown yet: one
            # final update (the route note is done).
            view.close()
            yield view.messages()
    except InputError as exc:
        raise gr.Error(str(exc), title="Cannot send this message", print_exception=False) from exc
    except ChatError as exc:
        # A model failure ends the answer, not the conversation: the partial
        # text and a note saying what failed stay in the chat, a toast says
        # so, and the page stays usable. (A raised gr.Error would cover the
        # whole chat with an error overlay.)
        message = exc.describe() if isinstance(exc, ProviderError) else str(exc)
        if isinstance(exc, ProviderError) and exc.model:
            message = f"{exc.model}: {message}"
        view.fail(message)
        gr.Warning(message, title="The answer could not be completed")
        yield view.messages()


def count_answer(metrics: Metrics, view: AnswerView, outcome: str) -> None:
    """Count one page answer that ended (``outcome``: ``chat.metrics.PAGE_OUTCOMES``)."""
    stats = view.stats
    stats.end()
    model = view.first_model or "none"
    ttft = None if stats.first_text_at is None else stats.first_text_at - stats.started
    metrics.page.observe(model, ttft, stats.reported_tokens(), stats.fallbacks)
    metrics.page_answer(model, outcome, stats.ended_at - stats.started)  # type: ignore[operator]
