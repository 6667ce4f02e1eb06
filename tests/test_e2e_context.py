"""Issue 5, end to end: a 40-turn conversation through the running app.

``python app.py`` (started as the README says) talks to a local OpenAI
wire-protocol server that records every request (``tests.e2e_conversation``).
The conversation is driven through Gradio's ``/chat`` API with one
``gradio_client.Client``: Gradio keeps the chatbot's history per client
session, so each ``submit`` continues the same conversation exactly as the
browser's next message does (the history is not an API parameter; the first
request of turn 2 carrying turn 1 proves it).

Settings are the defaults: CHAT_MAX_CONTEXT_TOKENS=8000,
CHAT_SUMMARY_THRESHOLD=6000, CHAT_SUMMARY_MAX_TOKENS=400; max output tokens
300 per answer. The model's window is 128,000, so the budget is
min(8000, 128000) - 300 = 7700 (``ContextManager.budget_for``). Each turn is a
250–400-word user message and a 60–90-word reply (~550 tokens), so the 40
turns add up to ~21,600 tokens, nearly three budgets.

Sizes are checked with the app's estimator (``TokenCounter().request``; the
fake provider reports the same count, so calibration stays at 1.0) and, to not
only trust it, with two counts that do not use it: characters / 4 and words
plus punctuation marks. "Once per threshold crossing" is checked exactly: a
turn crosses when the previous request plus the new exchange would pass the
threshold; the summary requests must fall on exactly those turns.

The app's log goes to ``test-artifacts/e2e-context-app.log``; the browser test
saves ``test-artifacts/e2e-summary-note.png``.
"""

from __future__ import annotations

import time
import pytest
from gradio_client import Client

from chat.config import Settings
from chat.context import SUMMARY_HEADER, ContextManager
from chat.messages import Message
from chat.tokens import TokenCounter
from tests.conftest import free_port
from tests.e2e_conversation import (
    ConversationWire,
    as_messages,
    conversation_text,
    is_summary_request,
    markers,
    reply_text,
    split_summary_prompt,
)
from tests.servers import app_process

TURNS = 40
MAX_TOKENS = 300
WINDOW = 128_000
MODEL = "openai:wire-gpt"
SYSTEM_PROMPT = "You are a careful assistant. Keep track of every detail the user gives."
SUMMARIZED_TITLE = "📝 Earlier conversation summarized"
SUMMARIZING_TITLE = "📝 Summarizing earlier conversation…"

CATALOGUE = f"""\
[[models]]
id = "{MODEL}"
label = "Wire GPT"
tier = "fast"
context_window = {WINDOW}

[routing]
fallback = ["{MODEL}"]
"""


class _NoSummarizer:
    async def summarize(self, previous, turns):  # pragma: no cover - never called
        raise AssertionError


def limits() -> tuple[int, int, int]:
    """(answer budget, summary-request budget, threshold) in tokens, by the app's own rules."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # the defaults the app runs with
    manager = ContextManager(settings, _NoSummarizer())
    answer_budget = manager.budget_for([WINDOW], MAX_TOKENS)
    summary_budget = manager.budget_for([WINDOW], settings.summary_max_tokens)
    threshold = min(settings.summary_threshold, answer_budget)
    return answer_budget, summary_budget, threshold


def lower_bounds(messages: list[Message]) -> tuple[int, int]:
    """Two counts that do not use the app's estimator: characters / 4, and words plus
    punctuation marks (each is at least one token in a BPE tokenizer)."""
    chars = sum(len(m.content) for m in messages)
    pieces = sum(len(m.content.split()) + sum(not c.isalnum() and not c.isspace() for c in m.content)
                 for m in messages)
    return chars // 4, pieces


def notes_of(payload: list[dict]) -> list[dict]:
    return [m for m in payload if (m.get("metadata") or {}).get("title")]


@pytest.fixture(scope="module")
def conversation(tmp_path_factory, artifacts_dir):
    """Run the whole conversation once; yield what the wire server and the UI saw."""
    tmp = tmp_path_factory.mktemp("e2e-context")
    (tmp / "models.toml").write_text(CATALOGUE)
    started = time.monotonic()
    with ConversationWire(summary_delay=0.05) as wire:
        env = {
            "OPENAI_BASE_URL": wire.openai_base_url,
            "OPENAI_API_KEY": "fake",
            "CHAT_MODELS_FILE": str(tmp / "models.toml"),
            "CHAT_LOCAL_MODEL_ENABLED": "false",
            "CHAT_OLLAMA_ENABLED": "false",
            "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",  # closed, in case discovery runs anyway
        }
        with app_process(free_port(), env=env, cwd=tmp, log_path=artifacts_dir / "e2e-context-app.log") as url:
            client = Client(url, verbose=False)
            turns = []  # per turn: (requests made during it, every /chat update, final payload)
            for k in range(1, TURNS + 1):
                before = len(wire.chat_requests)
                job = client.submit(conversation_text(k), MODEL, SYSTEM_PROMPT, 0.3, MAX_TOKENS, api_name="/chat")
                final = job.result(timeout=30)  # bounded, unlike iterating the job
                updates = job.outputs()  # every /chat update of this turn, the final one last
                turns.append((wire.chat_requests[before:], updates, final))
        yield {"turns": turns, "summaries": list(wire.summaries), "seconds": time.monotonic() - started}


def answer_requests(conversation) -> list[list[Message]]:
    out = []
    for k, (requests, _, _) in enumerate(conversation["turns"], 1):
        answers = [r for r in requests if not is_summary_request(r.body)]
        assert len(answers) == 1, f"turn {k}: {len(answers)} answer requests"
        out.append(as_messages(answers[0].body))
    return out


def summary_requests(conversation) -> list[tuple[int, dict]]:
    """(turn, request body) of every summary request, in order."""
    return [(k, r.body) for k, (requests, _, _) in enumerate(conversation["turns"], 1)
            for r in requests if is_summary_request(r.body)]


def test_the_ui_continues_one_conversation(conversation):
    answers = answer_requests(conversation)
    assert [m.content for m in answers[1][1:]] == [conversation_text(1), reply_text(1), conversation_text(2)]
    for k, (_, _, final) in enumerate(conversation["turns"], 1):
        assert final[-1]["content"] == reply_text(k)
    assert conversation["seconds"] < 90, conversation["seconds"]


def test_no_request_exceeds_the_budget(conversation):
    answer_budget, summary_budget, threshold = limits()
    assert (answer_budget, threshold) == (7700, 6000)
    counter = TokenCounter()
    answer_sizes = []
    for k, messages in enumerate(answer_requests(conversation), 1):
        estimated = counter.request(messages)
        by_chars, by_pieces = lower_bounds(messages)
        answer_sizes.append(estimated)
        assert estimated <= answer_budget, f"turn {k}: {estimated} estimated tokens > {answer_budget}"
        assert by_chars <= answer_budget and by_pieces <= answer_budget, (k, by_chars, by_pieces)
    summary_sizes = []
    for k, body in summary_requests(conversation):
        messages = as_messages(body)
        summary_sizes.append(counter.request(messages))
        assert summary_sizes[-1] <= summary_budget, k
        assert max(lower_bounds(messages)) <= summary_budget, k
    # Without context management turn 40 would be far over the budget
    # (~21,600 tokens): the test does not pass because the conversation is small.
    whole = [Message("system", SYSTEM_PROMPT)]
    for k in range(1, TURNS + 1):
        whole += [Message("user", conversation_text(k)), Message("assistant", reply_text(k))]
    assert counter.request(whole[:-1]) > 2 * answer_budget
    bounds = [lower_bounds(m) for m in answer_requests(conversation)]
    print(f"\nlargest answer request: {max(answer_sizes)} estimated tokens, chars/4 "
          f"{max(b[0] for b in bounds)}, words+punctuation {max(b[1] for b in bounds)}; "
          f"budget {answer_budget}; whole conversation {counter.request(whole[:-1])}; "
          f"summary requests {summary_sizes} (budget {summary_budget})")


def test_one_summary_per_threshold_crossing(conversation):
    """A fold happens exactly on the turns where the request would otherwise pass the
    threshold, with one summarizer call each, and each call is incremental: the previous
    summary as returned, plus only turns no earlier call has seen, in order."""
    _, _, threshold = limits()
    counter = TokenCounter()
    answers = answer_requests(conversation)
    folds = summary_requests(conversation)

    crossings = []
    for k in range(2, TURNS + 1):
        unfolded = answers[k - 2] + [Message("assistant", reply_text(k - 1)), Message("user", conversation_text(k))]
        if counter.request(unfolded) > threshold:
            crossings.append(k)
    fold_turns = [k for k, _ in folds]
    print(f"\nsummary requests at turns {fold_turns} ({len(folds)} for {TURNS} turns); crossings {crossings}")
    assert fold_turns == crossings, "one summary request per threshold crossing, and only then"
    assert 2 <= len(folds) <= TURNS // 4
    assert all(b - a > 1 for a, b in zip(fold_turns, fold_turns[1:])), "never on consecutive turns"

    summaries = conversation["summaries"]
    assert len(summaries) == len(folds)
    next_turn = 1
    for i, (k, body) in enumerate(folds):
        previous, new_turns = split_summary_prompt(body)
        assert previous == (summaries[i - 1] if i else "(none yet)"), f"fold {i + 1} at turn {k}"
        covered = sorted(set(markers(new_turns)))
        assert covered == list(range(next_turn, covered[-1] + 1)), f"fold {i + 1}: {covered}"
        assert covered[-1] < k - 1, "the exchange before the latest message stays verbatim"
        for n in covered:  # the turns themselves, complete, not just their markers
            assert f"User: {conversation_text(n)}" in new_turns
            assert f"Assistant: {reply_text(n)}" in new_turns
        next_turn = covered[-1] + 1
        # After the fold the request is back under half the threshold (the target),
        # so the next fold is a whole crossing away.
        assert counter.request(answers[k - 1]) <= threshold // 2, (k, counter.request(answers[k - 1]))


def test_final_request_carries_the_summary_then_recent_turns_verbatim(conversation):
    final = answer_requests(conversation)[-1]
    summaries = conversation["summaries"]
    assert final[0] == Message("system", SYSTEM_PROMPT)
    assert final[1].role == "system" and final[1].content == SUMMARY_HEADER + summaries[-1]
    folded = markers(summaries[-1])
    assert folded == list(range(1, folded[-1] + 1)), "the summary covers every turn before the recent ones"
    recent = []
    for n in range(folded[-1] + 1, TURNS):
        recent += [Message("user", conversation_text(n)), Message("assistant", reply_text(n))]
    recent.append(Message("user", conversation_text(TURNS)))
    assert list(final[2:]) == recent, "no turn lost, none repeated, recent ones verbatim and in order"
    assert len(recent) >= 3
    print(f"\nfinal request: system prompt, summary of turns 1–{folded[-1]}, "
          f"turns {folded[-1] + 1}–{TURNS} verbatim ({len(recent)} messages)")


def test_the_ui_shows_the_summary(conversation):
    turns = conversation["turns"]
    summaries = conversation["summaries"]
    final_payload = turns[-1][2]
    covered = markers(summaries[-1])[-1]
    notes = notes_of(final_payload)
    assert final_payload[-1]["content"] == reply_text(TURNS) and not notes_of(final_payload[-1:])
    shown = [n for n in notes if n["metadata"]["title"].startswith(SUMMARIZED_TITLE)]
    assert len(shown) == 1, [n["metadata"]["title"] for n in notes]
    assert shown[0]["metadata"]["title"] == f"{SUMMARIZED_TITLE} ({2 * covered} messages)"
    assert shown[0]["content"] == summaries[-1]
    assert notes[0] is shown[0], "the summary note comes first"
    # While a fold runs, the status says so (each summary streams for ~0.5 s here).
    for k, _ in summary_requests(conversation):
        titles = [n["metadata"]["title"] for update in turns[k - 1][1] for n in notes_of(update)]
        assert SUMMARIZING_TITLE in titles, f"turn {k}: {titles}"


@pytest.mark.browser
def test_browser_shows_the_summary_note(tmp_path, artifacts_dir):
    """The same in Chromium, where Gradio sends history in its browser shape (content as
    parts). CHAT_SUMMARY_THRESHOLD=1500 so a fold comes after a few typed messages
    (at this threshold every turn from the third on crosses it again: the kept exchange
    alone is ~600 tokens). The note is collapsed; opening it shows the summary."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import ARGS, chromium_path, send

    (tmp_path / "models.toml").write_text(CATALOGUE)
    with ConversationWire(summary_delay=0.05) as wire:
        env = {
            "OPENAI_BASE_URL": wire.openai_base_url,
            "OPENAI_API_KEY": "fake",
            "CHAT_MODELS_FILE": str(tmp_path / "models.toml"),
            "CHAT_LOCAL_MODEL_ENABLED": "false",
            "CHAT_OLLAMA_ENABLED": "false",
            "CHAT_SUMMARY_THRESHOLD": "1500",
        }
        with app_process(free_port(), env=env, cwd=tmp_path, log_path=tmp_path / "app.log") as url, \
                sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="load")
            box = page.locator("textarea").first
            box.wait_for(timeout=30_000)
            turns = 5
            for k in range(1, turns + 1):
                send(page, box, conversation_text(k))
                page.get_by_text(f"Reply to TURN-{k}:").wait_for(timeout=30_000)
                page.locator('[data-testid="stop-button"]').wait_for(state="detached", timeout=30_000)
            summary = wire.summaries[-1]
            covered = markers(summary)[-1]
            # The last answer's note, titled with how many messages the summary covers.
            note = page.get_by_text(f"{SUMMARIZED_TITLE} ({2 * covered} messages)").last
            note.wait_for(timeout=10_000)
            text = page.get_by_text(summary).last
            if not text.is_visible():
                note.click()  # a finished note is shown collapsed, its text rendered on opening
            text.wait_for(state="visible", timeout=5_000)
            note.scroll_into_view_if_needed()
            time.sleep(0.5)  # let the note's opening animation finish before the screenshot
            page.screenshot(path=str(artifacts_dir / "e2e-summary-note.png"))
            browser.close()

        final = as_messages([r for r in wire.chat_requests if not is_summary_request(r.body)][-1].body)
        assert final[1] == Message("system", SUMMARY_HEADER + summary)
        recent = []
        for n in range(covered + 1, turns):
            recent += [Message("user", conversation_text(n)), Message("assistant", reply_text(n))]
        assert list(final[2:]) == [*recent, Message("user", conversation_text(turns))]
