"""The response cache and the answer's figures through ``python app.py``: the
``openai`` SDK and raw HTTP against the API, ``gradio_client`` against /chat,
and the wire server's log for what really went upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gradio_client import Client
from openai import OpenAI

from tests.api_support import post_stream
from tests.e2e_support import SYSTEM, notes_of, requests_for, run_app, tag, wire_env, write_catalogue
from tests.wire import WireServer

GPT = "openai:wire-gpt"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, WireServer]]:
    cwd = tmp_path_factory.mktemp("cache-app")
    with WireServer() as wire:
        env = wire_env(wire, write_catalogue(cwd), "sk-test-cache", CHAT_LOCAL_MODEL_ENABLED="false",
                       CHAT_OLLAMA_ENABLED="false", CHAT_RESPONSE_CACHE_TTL="600")
        with run_app(env, cwd, cwd / "app.log") as url:
            yield url, wire


def client(url: str) -> OpenAI:
    return OpenAI(base_url=url + "v1", api_key="unused", max_retries=0)


def relay(usage) -> dict:
    return (usage.model_extra or {})["relay"]


def test_the_api_usage_carries_the_answers_figures(app):
    url, wire = app
    stream = client(url).chat.completions.create(
        model=GPT, stream=True, stream_options={"include_usage": True}, temperature=0.3,
        messages=[{"role": "user", "content": f"[[tokens:30]] [[delay:0.03]] count {tag()}"}])
    chunks = list(stream)
    usage = chunks[-1].usage
    figures = relay(usage)
    assert usage.completion_tokens == figures["output_tokens"] == 30 and not figures["estimated"]
    assert usage.prompt_tokens == figures["input_tokens"] > 0
    assert 0 < figures["ttft_s"] < figures["duration_s"]
    assert figures["duration_s"] >= 29 * 0.03 * 0.9
    assert figures["tokens_per_s"] == pytest.approx(30 / (figures["duration_s"] - figures["ttft_s"]), rel=0.02)
    assert figures["models"] == [GPT] and figures["cached"] is False and figures["cost_usd"] is None  # no price

    whole = client(url).chat.completions.create(
        model=GPT, temperature=0.3, messages=[{"role": "user", "content": f"hello {tag()}"}])
    assert relay(whole.usage)["models"] == [GPT] and relay(whole.usage)["output_tokens"] == whole.usage.completion_tokens


def test_a_repeated_request_is_replayed_with_the_upstream_called_once(app):
    url, wire = app
    marker = tag()
    body = {"model": GPT, "temperature": 0.2, "max_tokens": 300, "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"capital? {marker}"}]}
    first = post_stream(url, body)
    second = post_stream(url, body)
    assert len(requests_for(wire, marker)) == 1, "the second answer came from the cache"
    assert second.text == first.text and second.text.startswith("Echo: capital?")
    assert second.headers["X-Model-Name"] == GPT
    assert [n for n in second.notices if n["type"] == "cached"], second.notices
    usage = second.events[-1]["usage"]
    assert usage["relay"]["cached"] is True and usage["relay"]["cost_usd"] == 0
    assert usage["completion_tokens"] == first.events[-1]["usage"]["completion_tokens"], "the original's counts"

    post_stream(url, {**body, "temperature": 0.9})  # another request: a miss
    assert len(requests_for(wire, marker)) == 2


def test_the_page_and_the_api_share_the_cache(app):
    url, wire = app
    marker = tag()
    message = f"shared question {marker}"
    messages = Client(url, verbose=False).predict(message, GPT, SYSTEM, 0.5, 256, api_name="/chat")
    assert not any("⚡ cached" in title for title, _ in notes_of(messages))
    answer = client(url).chat.completions.create(
        model=GPT, temperature=0.5, max_tokens=256,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": message}])
    assert relay(answer.usage)["cached"] is True
    again = Client(url, verbose=False).predict(message, GPT, SYSTEM, 0.5, 256, api_name="/chat")
    assert any("⚡ cached" in title for title, _ in notes_of(again)), "the page marks a replay in its note"
    assert len(requests_for(wire, marker)) == 1


def test_stopped_and_cut_answers_are_not_stored(app):
    url, wire = app
    marker = tag()
    body = {"model": GPT, "messages": [{"role": "user", "content": f"[[tokens:200]] [[delay:0.02]] {marker}"}]}
    stopped = post_stream(url, body, stop_after_text=20)  # the client goes away = Stop
    assert stopped.text and len(requests_for(wire, marker)) == 1
    post_stream(url, body)
    assert len(requests_for(wire, marker)) == 2, "a stopped answer was not replayed"

    cut = {"model": GPT, "messages": [{"role": "user", "content": f"[[tokens:20]] [[finish:length]] {tag()}"}]}
    for _ in range(2):
        post_stream(url, cut)
    assert len(requests_for(wire, cut["messages"][0]["content"].split()[-1])) == 2, "a length cut-off is no answer to keep"
