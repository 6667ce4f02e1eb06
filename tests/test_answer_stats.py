"""An answer's live figures (``chat.answer_stats``) and how the page's note shows
them (``chat.render``), from typed events on a hand-driven clock."""

from __future__ import annotations

import re

import pytest

from chat.answer_stats import AnswerStats
from chat.catalogue import Catalogue, ModelSpec
from chat.events import Cached, FallingBack, Finish, InputEstimate, ModelSelected, TextDelta, Usage
from chat.render import CACHED, DEMO_BADGE, AnswerView
from chat.tokens import estimate_tokens

CATALOGUE = Catalogue(models=(
    ModelSpec("p:a", "A", "fast", 8000, None, 1.0, 10.0),  # $1 / $10 per million tokens
    ModelSpec("q:b", "B", "fast", 8000, None, 2.0, 20.0),
    ModelSpec("r:free", "No price", "fast", 8000),
    ModelSpec("local:smollm2", "SmolLM2", "fast", 8192, None, 0.0, 0.0),
))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_figures_while_streaming_are_estimates_then_the_reported_counts(clock):
    stats = AnswerStats(CATALOGUE, clock=clock)
    clock.now += 0.5
    stats.apply(ModelSelected("p:a", "A"))
    stats.apply(InputEstimate(200))
    clock.now += 0.25  # first text 0.75 s after the request
    stats.apply(TextDelta("Hello there, "))
    clock.now += 1.0
    stats.apply(TextDelta("general Kenobi."))
    live = stats.figures()
    assert live.ttft == pytest.approx(0.75) and live.duration == pytest.approx(1.75)
    out = estimate_tokens("Hello there, general Kenobi.")
    assert live.output_tokens == out and live.input_tokens == 200 and live.estimated
    assert live.tokens_per_s == pytest.approx(out / 1.0)
    assert live.cost == pytest.approx((200 * 1.0 + out * 10.0) / 1e6)
    assert "~" in live.line()

    clock.now += 0.5
    stats.apply(Usage(180, 9))
    stats.apply(Finish("stop"))
    clock.now += 5  # the clock stops at the end
    done = stats.figures()
    assert (done.input_tokens, done.output_tokens, done.estimated) == (180, 9, False)
    assert done.duration == pytest.approx(2.25)
    assert done.tokens_per_s == pytest.approx(9 / (done.duration - done.ttft))
    assert done.cost == pytest.approx((180 * 1.0 + 9 * 10.0) / 1e6)
    assert done.models == ("p:a",)
    line = done.line()
    assert "first token 0.75 s" in line and "6.0 tok/s" in line and "tokens 180 in / 9 out" in line
    assert "$0.00027" in line and "total 2.25 s" in line and "~" not in line


def test_a_fallback_mid_answer_prices_each_model_and_names_both(clock):
    stats = AnswerStats(CATALOGUE, clock=clock)
    for event in (ModelSelected("p:a", "A"), TextDelta("The answer "),
                  FallingBack("p:a", "cut", "q:b", continuing=True), ModelSelected("q:b", "B"),
                  TextDelta("is 42."), Usage(50, 4), Finish("stop")):
        clock.now += 0.1
        stats.apply(event)
    figures = stats.figures()
    first = estimate_tokens("The answer ")  # p:a was cut off: no report, an estimate
    assert figures.models == ("p:a", "q:b") and figures.estimated
    assert figures.output_tokens == first + 4 and figures.input_tokens == 50
    assert figures.cost == pytest.approx((first * 10.0 + 50 * 2.0 + 4 * 20.0) / 1e6)
    assert "p:a → q:b" in figures.line()


def test_no_price_means_no_cost_and_the_embedded_model_costs_nothing(clock):
    unpriced = AnswerStats(CATALOGUE, clock=clock)
    local = AnswerStats(CATALOGUE, clock=clock)
    for stats, model in ((unpriced, "r:free"), (local, "local:smollm2")):
        for event in (ModelSelected(model, model), TextDelta("hi"), Usage(3, 1), Finish("stop")):
            stats.apply(event)
    assert unpriced.figures().cost is None and "$" not in unpriced.figures().line()
    assert local.figures().cost == 0 and "no cost" in local.figures().line()


def test_a_cached_answer_is_marked_and_costs_nothing(clock):
    stats = AnswerStats(CATALOGUE, clock=clock)
    for event in (ModelSelected("q:b", "B"), Cached(30.0, 120, 40), TextDelta("stored text"), Finish("stop")):
        stats.apply(event)
    figures = stats.figures()
    assert figures.cached and figures.cost == 0
    assert (figures.input_tokens, figures.output_tokens) == (120, 40)
    assert "no cost" in figures.line() and figures.as_json()["cached"] is True


def test_the_route_note_streams_pending_with_figures_then_is_done():
    view = AnswerView(CATALOGUE)
    view.apply(ModelSelected("p:a", "A", "fast", "short prompt"))
    waiting = view.messages()[0]["metadata"]
    assert waiting["status"] == "pending" and "log" not in waiting  # no figures before the first text
    view.apply(TextDelta("Hi"))
    streaming = view.messages()[0]["metadata"]
    assert streaming["status"] == "pending" and streaming["log"].startswith("first token")
    view.apply(Finish("stop"))
    assert view.messages()[0]["metadata"]["status"] == "done"


def test_badges_for_the_embedded_model_and_for_a_cached_answer():
    local = AnswerView(CATALOGUE)
    for event in (ModelSelected("local:smollm2", "SmolLM2"), TextDelta("Tiny answer")):
        local.apply(event)
    assert DEMO_BADGE in local.messages()[0]["metadata"]["title"]
    cached = AnswerView(CATALOGUE)
    for event in (ModelSelected("p:a", "A"), Cached(5.0, 1, 1), TextDelta("x"), Finish("stop")):
        cached.apply(event)
    title = cached.messages()[0]["metadata"]["title"]
    assert CACHED in title and DEMO_BADGE not in title


def test_a_continuation_view_grows_the_answer_it_was_given():
    view = AnswerView(CATALOGUE, prefix="Mercury, Venus, Ea", continuing=True, ids="continued1")
    for event in (ModelSelected("q:b", "B"), TextDelta("rth, Mars."), Usage(10, 3), Finish("stop")):
        view.apply(event)
    note, answer = view.messages()
    assert answer["content"] == "Mercury, Venus, Earth, Mars."
    assert note["metadata"]["title"].startswith("⏩ Continued by B (q:b)")
    assert note["metadata"]["id"] == "continued1-0"
    assert re.search(r"tokens 10 in / 3 out", note["metadata"]["log"])
