"""Issue 8 end to end: the OpenAI-compatible API of ``python app.py``, driven with
the real ``openai`` SDK and raw httpx, every provider on a local wire server.

One app process for the module, started with ``GRADIO_SSR_MODE=True`` in its
environment (as Hugging Face Spaces does): every test here is also a check
that the API answers JSON and SSE, not the HTML page of a Node proxy. The
heartbeat is half a second so a late first token shows it quickly.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from gradio_client import Client

from chat.continuation import continue_instruction
from tests.api_support import metric, post_stream
from tests.e2e_support import (
    SYSTEM,
    answer_of,
    chat,
    model_of,
    requests_for,
    run_app,
    tag,
    wait_for,
    wire_env,
    write_catalogue,
)
from tests.wire import WireServer

HEARTBEAT = 0.5
MAX_BYTES = 100_000
GPT, CLAUDE = "openai:wire-gpt", "anthropic:wire-claude"
UI_ORIGIN = "https://ui.example"  # CHAT_CORS_ORIGINS: a front end on another site
WORDS = [f"w{i} " for i in range(30)]


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    # No Ollama models: the chain of a wire model is exactly GPT, Claude.
    with WireServer(ollama_models=[]) as server:
        yield server


@pytest.fixture(scope="module")
def url(wire: WireServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cwd = tmp_path_factory.mktemp("api-app")
    env = wire_env(
        wire, write_catalogue(cwd), "sk-e2e-api-fake",
        GRADIO_SSR_MODE="True",
        CHAT_LOCAL_MODEL_ENABLED="false",
        CHAT_SSE_HEARTBEAT=str(HEARTBEAT),
        CHAT_MAX_REQUEST_BYTES=str(MAX_BYTES),
        CHAT_MAX_MESSAGE_CHARS="20000",
        CHAT_COOLDOWN_SECONDS="0",  # one test's failures must not bench a model for the next
        CHAT_CORS_ORIGINS=UI_ORIGIN,
    )
    with run_app(env, cwd, cwd / "app.log") as app_url:
        yield app_url


@pytest.fixture
def sdk(url: str) -> Iterator[openai.OpenAI]:
    # The SDK's own retries off: a test sees exactly what the server answered.
    with openai.OpenAI(base_url=url + "v1", api_key="unused-until-keys", max_retries=0, timeout=60) as client:
        yield client


def ask(text: str, **extra) -> dict:
    return {"model": GPT, "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            **extra}


# -- same port, whatever GRADIO_SSR_MODE says ---------------------------------------


def test_the_api_answers_json_next_to_the_page_with_ssr_requested(url):
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for path in ("v1/models", "health", "health?live=1"):
        response = httpx.get(url + path, timeout=30)
        assert response.headers["content-type"] == "application/json", (path, response.text[:200])
        response.json()
    assert httpx.get(url + "metrics", timeout=10).headers["content-type"].startswith("text/plain")


def test_a_page_on_a_listed_origin_calls_the_api_and_reads_which_model_answered(url):
    """CHAT_CORS_ORIGINS lists the origin: the browser's preflight is answered,
    and the answer lets the page read the model headers; another origin is refused."""
    browser = {"Host": "relay.example", "Origin": UI_ORIGIN}
    preflight = httpx.options(url + "v1/chat/completions", timeout=10, headers={
        **browser, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == UI_ORIGIN
    answer = httpx.post(url + "v1/chat/completions", json=ask("Say hello"), headers=browser, timeout=60)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == UI_ORIGIN
    readable = {name.strip().lower() for name in answer.headers["access-control-expose-headers"].split(",")}
    assert {"x-model-name", "x-model-tier", "x-fallback-used", "x-fallback-chain", "retry-after"} <= readable
    assert answer.headers["x-model-name"] == GPT
    refused = httpx.post(url + "v1/chat/completions", json=ask("Say hello"), timeout=10,
                         headers={"Host": "relay.example", "Origin": "https://elsewhere.example"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-expose-headers" not in httpx.get(url + "v1/models", timeout=10).headers, "not for curl"


def test_models_list_in_openai_format_with_tier_window_and_state(sdk, url):
    ids = [m.id for m in sdk.models.list()]
    assert ids[0] == "auto" and GPT in ids and CLAUDE in ids
    raw = httpx.get(url + "v1/models", timeout=10).json()
    gpt = next(m for m in raw["data"] if m["id"] == GPT)
    assert (gpt["owned_by"], gpt["tier"], gpt["context_window"], gpt["state"]) == ("openai", "fast", 16000, "ready")
    assert sdk.models.retrieve(CLAUDE).owned_by == "anthropic"


# -- streaming and not ----------------------------------------------------------------


def test_streaming_with_the_openai_sdk(sdk, wire):
    marker = tag()
    with sdk.chat.completions.with_streaming_response.create(
        model=GPT, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Hello there {marker}"}],
    ) as response:
        headers = response.headers
        chunks = list(response.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Echo: Hello there {marker}"
    assert {c.model for c in chunks} == {GPT}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4  # the wire's usage
    assert (headers["x-model-name"], headers["x-model-tier"], headers["x-fallback-used"]) == (GPT, "fast", "false")
    assert headers["x-fallback-chain"] == f"{GPT},{CLAUDE}"
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
    [upstream] = requests_for(wire, marker)
    assert upstream.body["messages"][0] == {"role": "system", "content": SYSTEM}, "the client's system prompt"


def test_non_streaming_with_the_openai_sdk(sdk, wire):
    marker = tag()
    raw = sdk.chat.completions.with_raw_response.create(
        model=CLAUDE, messages=[{"role": "user", "content": [{"type": "text", "text": f"Parts {marker}"}]}],
        temperature=0.2, max_tokens=50,
    )
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == CLAUDE
    assert completion.choices[0].message.content == f"Echo: Parts {marker}"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0
    assert (raw.headers["x-model-name"], raw.headers["x-fallback-used"]) == (CLAUDE, "false")
    [upstream] = requests_for(wire, marker)
    assert upstream.body["max_tokens"] == 50
    assert upstream.body["system"] == "You are a helpful assistant.", "no system message: the default prompt"


def test_a_conversation_goes_upstream_with_its_history(sdk, wire):
    marker = tag()
    sdk.chat.completions.create(model=GPT, temperature=0.2, max_completion_tokens=40, messages=[
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": f"Second question {marker}"},
    ])
    [upstream] = requests_for(wire, marker)
    assert upstream.body["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": f"Second question {marker}"},
    ]
    assert (upstream.body["temperature"], upstream.body["max_tokens"]) == (0.2, 40)


# -- which model answered ------------------------------------------------------------


def test_a_fallback_before_the_first_token_is_in_the_headers(url, wire):
    marker = tag()
    out = post_stream(url, ask(f"Hi {marker} [[fail:503@wire-gpt]]"))
    assert out.status == 200
    assert (out.headers["x-model-name"], out.headers["x-model-tier"]) == (CLAUDE, "fast")
    assert out.headers["x-fallback-used"] == "true"
    assert out.headers["x-fallback-chain"] == f"{GPT},{CLAUDE}"
    assert out.text == f"Echo: Hi {marker}"
    assert {c["model"] for c in out.chunks} == {CLAUDE}
    [fallback] = [n for n in out.notices if n["type"] == "fallback"]
    assert fallback["failed_model"] == GPT and fallback["next_model"] == CLAUDE
    assert fallback["reason"].startswith("unavailable or overloaded")


def test_a_fallback_after_the_headers_is_told_in_the_stream(url, wire):
    marker = tag()
    out = post_stream(url, ask(f"Words {marker} [[tokens:30]] [[cut:10@wire-gpt]] [[delay:0.02@wire-gpt]]"))
    assert out.headers["x-model-name"] == GPT and out.headers["x-fallback-used"] == "false"
    models = [c["model"] for c in out.chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert models[0] == GPT and models[-1] == CLAUDE, "each chunk names the model writing it"
    assert models == sorted(models, key=[GPT, CLAUDE].index), "one switch, never back"
    [fallback] = [n for n in out.notices if n["type"] == "fallback"]
    assert fallback["continuing"] is True and fallback["reason"].startswith("stream interrupted")
    partial = "".join(WORDS[:10])
    # The fallback (a compliant model on the wire server) continued from exactly there.
    assert out.text == "".join(WORDS), "the partial answer, then only the rest"
    first, second = requests_for(wire, marker)
    assert model_of(second) == "wire-claude"
    assert second.body["messages"][-2] == {"role": "assistant", "content": partial}


# -- errors -------------------------------------------------------------------------------


def test_every_model_failing_before_any_text_is_a_503_with_retry_after(sdk, url):
    marker = tag()
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model=GPT, messages=[
            {"role": "user", "content": f"{marker} [[fail:503@wire-gpt]] [[fail:401@wire-claude]]"}])
    response = caught.value.response
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["type"] == "service_unavailable" and error["code"] == "all_models_failed"
    assert f"{GPT}: unavailable or overloaded" in error["message"]
    assert f"{CLAUDE}: authentication failed" in error["message"]
    # The streaming form refuses the same way: status and body before any byte of SSE.
    out = post_stream(url, ask(f"{marker} [[fail:503@wire-gpt]] [[fail:401@wire-claude]]"))
    assert out.status == 503 and '"all_models_failed"' in out.lines[0][1]


def test_an_error_after_the_first_byte_is_an_error_event_then_done(url, sdk):
    marker = tag()
    body = ask(f"Words {marker} [[tokens:30]] [[cut:5@wire-gpt]] [[cut:3@wire-claude]]")
    out = post_stream(url, body)
    assert out.status == 200
    assert out.text.startswith("".join(WORDS[:5])), "the text already sent stands"
    assert out.lines[-1][1] == "data: [DONE]"
    error = out.events[-1]["error"]
    assert error["type"] == "service_unavailable" and "No model could answer" in error["message"]
    # The openai SDK raises on that event instead of hanging.
    stream = sdk.chat.completions.create(stream=True, **ask(f"Again {marker} [[tokens:30]] "
                                                            "[[cut:5@wire-gpt]] [[cut:3@wire-claude]]"))
    with pytest.raises(openai.APIError, match="No model could answer"):
        for _ in stream:
            pass


# -- disconnect = Stop --------------------------------------------------------------------


def _disconnect_seen(wire: WireServer, marker: str, closed_at: float) -> float:
    record = wait_for(lambda: next((r for r in requests_for(wire, marker) if r.disconnected), None), 5,
                      "the upstream server to see the disconnect", interval=0.01)
    return record.disconnected - closed_at


def test_a_client_disconnect_mid_stream_reaches_upstream_within_200ms(url, wire):
    marker = tag()
    body = ask(f"Long {marker} [[tokens:400]] [[delay:0.02]]")
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url + "v1/chat/completions", json={**body, "stream": True}) as response:
            seen = ""
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    seen += line
                if seen.count("w") >= 5:
                    break
            closed_at = time.monotonic()
    assert _disconnect_seen(wire, marker, closed_at) < 0.2


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "not streaming"])
def test_a_client_disconnect_before_the_first_token_reaches_upstream_within_200ms(url, wire, stream):
    marker = tag()
    host, port = httpx.URL(url).host, httpx.URL(url).port
    payload = json.dumps({**ask(f"Slow {marker} [[stall:10]]"), "stream": stream}).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    with socket.create_connection((host, port)) as sock:
        sock.sendall(head.encode() + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        wait_for(lambda: requests_for(wire, marker), 10, "the upstream request", interval=0.01)
        closed_at = time.monotonic()
    assert _disconnect_seen(wire, marker, closed_at) < 0.2


# -- heartbeat ------------------------------------------------------------------------------


def test_heartbeats_and_headers_go_out_while_the_first_token_is_late(url, sdk):
    marker = tag()
    out = post_stream(url, ask(f"Late {marker} [[stall:3]]"))
    first_text = out.first(lambda line: '"content":"Echo' in line)
    assert first_text is not None and first_text >= 2.5
    assert out.headers_at < first_text - 1, "headers committed at the first heartbeat, not with the text"
    pings = [t for t, line in out.lines if line == ": ping" and t < first_text]
    assert len(pings) >= 2 and pings[0] < first_text - 1
    assert out.headers["x-model-name"] == GPT
    # The SDK reads through the comments.
    chunks = list(sdk.chat.completions.create(stream=True, **ask(f"Late again {marker} [[stall:1.2]]")))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"Echo: Late again {marker}"


# -- continuing a cut answer ------------------------------------------------------------------


def test_continuing_a_cut_answer_repeats_nothing(url, wire, sdk):
    marker = tag()
    question = f"Count {marker} [[tokens:30@wire-gpt]] [[delay:0.02@wire-gpt]]"
    cut = post_stream(url, {**ask(question)}, stop_after_text=len("".join(WORDS[:8])))
    received = cut.text
    assert 0 < len(received) < len("".join(WORDS)), "the connection dropped midway"

    rest = sdk.chat.completions.create(model=GPT, messages=[
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": question},
        {"role": "assistant", "content": received},
    ]).choices[0].message.content

    assert received + rest == "".join(WORDS), "what the client kept, then only the new text"
    for word in WORDS:
        assert (received + rest).count(word) == 1
    upstream = requests_for(wire, marker)[-1]
    assert upstream.body["messages"][-2:] == [{"role": "assistant", "content": received},
                                              {"role": "user", "content": continue_instruction(received)}]
    # Streaming works the same way.
    streamed = post_stream(url, {"model": GPT, "messages": [
        {"role": "user", "content": question}, {"role": "assistant", "content": received}]})
    assert received + streamed.text == "".join(WORDS)


# -- bad input -------------------------------------------------------------------------------------

OK_MESSAGES = [{"role": "user", "content": "Hello"}]
BAD = [
    ("invalid json", b'{"model": "auto", "messages": [', 400, "not valid JSON"),
    ("not an object", [1, 2], 400, "must be a JSON object"),
    ("no messages", {"model": "auto"}, 400, "'messages' is missing"),
    ("empty messages", {"messages": []}, 400, "non-empty list"),
    ("messages a string", {"messages": "Hello"}, 400, "non-empty list"),
    ("message not an object", {"messages": ["Hello"]}, 400, "must be an object with 'role' and 'content'"),
    ("unknown role", {"messages": [{"role": "robot", "content": "x"}]}, 400, "system, user or assistant"),
    ("tool role", {"messages": [{"role": "tool", "content": "x"}]}, 400, "does not call tools"),
    ("n: 2", {"messages": OK_MESSAGES, "n": 2}, 400, "'n' must be 1"),
    ("an image part", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, 400, "only text parts"),
    ("empty content", {"messages": [{"role": "user", "content": "   "}]}, 400, "content is empty"),
    ("content a number", {"messages": [{"role": "user", "content": 42}]}, 400, "string or a list of text parts"),
    ("unknown model", {"model": "openai:nope", "messages": OK_MESSAGES}, 404, f"Available: auto, {GPT}"),
    ("model not a string", {"model": 7, "messages": OK_MESSAGES}, 400, "model id string"),
    ("last message a system message", {"messages": OK_MESSAGES + [{"role": "system", "content": "x"}]}, 400,
     "End with a user message"),
    ("only an assistant message", {"messages": [{"role": "assistant", "content": "Hi"}]}, 400, "no user message"),
    ("empty assistant message last", {"messages": OK_MESSAGES + [{"role": "assistant", "content": ""}]}, 400,
     "empty assistant message"),
    ("temperature not a number", {"messages": OK_MESSAGES, "temperature": "hot"}, 400, "number from 0 to 2"),
    ("temperature too high", {"messages": OK_MESSAGES, "temperature": 3}, 400, "number from 0 to 2"),
    ("max_tokens zero", {"messages": OK_MESSAGES, "max_tokens": 0}, 400, "at least 1"),
    ("max_completion_tokens text", {"messages": OK_MESSAGES, "max_completion_tokens": "10"}, 400, "whole number"),
    ("stream not a boolean", {"messages": OK_MESSAGES, "stream": "yes"}, 400, "true or false"),
    ("stream_options not an object", {"messages": OK_MESSAGES, "stream_options": True}, 400, "include_usage"),
    ("message over CHAT_MAX_MESSAGE_CHARS", {"messages": [{"role": "user", "content": "x" * 30_000}]}, 400,
     "the limit is 20,000 characters"),
    ("over-size body", {"messages": [{"role": "user", "content": "x" * (MAX_BYTES + 10)}]}, 413,
     "CHAT_MAX_REQUEST_BYTES"),
]


@pytest.mark.parametrize(("case", "body", "status", "says"), BAD, ids=[case for case, *_ in BAD])
def test_a_bad_request_gets_a_4xx_saying_what_to_change(url, case, body, status, says):
    if isinstance(body, bytes):
        response = httpx.post(url + "v1/chat/completions", content=body, timeout=30,
                              headers={"Content-Type": "application/json"})
    else:
        response = httpx.post(url + "v1/chat/completions", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert says in error["message"], error["message"]
    assert error["type"] == "invalid_request_error" and error["code"]


def test_after_all_that_the_server_still_serves(url, sdk):
    assert httpx.get(url + "v1/chat/completions", timeout=10).status_code == 405
    missing = httpx.post(url + "v1/embeddings", json={}, timeout=10)
    assert missing.status_code == 404 and "/v1/chat/completions" in missing.json()["error"]["message"]
    answer = sdk.chat.completions.create(model="auto", messages=OK_MESSAGES)
    assert answer.choices[0].message.content == "Echo: Hello"


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_count_a_request_and_a_fallback(url):
    route = "/v1/chat/completions"
    ok = dict(route=route, model=CLAUDE, outcome="ok", caller="anonymous")
    fell = dict(model=GPT, reason="unavailable or overloaded")
    def values() -> tuple[float, ...]:
        return (metric(url, "relay_api_requests_total", **ok), metric(url, "relay_api_fallbacks_total", **fell),
                metric(url, "relay_api_tokens_total", model=CLAUDE, direction="output"),
                metric(url, "relay_api_time_to_first_token_seconds_count", model=CLAUDE))

    before = values()
    out = post_stream(url, ask(f"Count me {tag()} [[fail:503@wire-gpt]]"))
    assert out.status == 200 and out.headers["x-model-name"] == CLAUDE
    # A stream is counted as its last byte goes out: allow the server a moment.
    after = wait_for(lambda: (v := values()) and v[0] > before[0] and v, 5, "the request to be counted")
    assert after[0] == before[0] + 1
    assert after[1] == before[1] + 1
    assert after[2] > before[2]
    assert after[3] == before[3] + 1
    assert metric(url, "relay_api_active_streams") == 0


def test_metrics_count_page_answers_apart_from_the_api(url):
    """A message sent from the page (Gradio's /chat route) is counted under
    relay_page_*, with the model that answered and the one that fell back;
    the API's request counter does not move."""
    ok = dict(model=CLAUDE, outcome="ok")
    fell = dict(model=GPT, reason="unavailable or overloaded")
    def values() -> tuple[float, ...]:
        return (metric(url, "relay_page_answers_total", **ok), metric(url, "relay_page_fallbacks_total", **fell),
                metric(url, "relay_page_tokens_total", model=CLAUDE, direction="output"),
                metric(url, "relay_page_time_to_first_token_seconds_count", model=CLAUDE),
                metric(url, "relay_page_answer_duration_seconds_count", model=CLAUDE),
                metric(url, "relay_api_requests_total", route="/v1/chat/completions"))

    before = values()
    outcome = chat(url, f"Count me {tag()} [[fail:503@wire-gpt]]", GPT)
    assert outcome.error is None and outcome.answer.startswith("Echo: Count me"), outcome.payload_text()[:500]
    after = wait_for(lambda: (v := values()) and v[0] > before[0] and v, 5, "the answer to be counted")
    assert after[:5] == (before[0] + 1, before[1] + 1, after[2], before[3] + 1, before[4] + 1)
    assert after[2] > before[2], "the tokens Claude reported"
    assert after[5] == before[5], "a page answer is not an API request"
    assert metric(url, "relay_page_active_answers") == 0


def test_metrics_count_a_page_answer_stopped_midway(url, wire):
    marker = tag()
    stopped = dict(model=GPT, outcome="stopped")
    before = metric(url, "relay_page_answers_total", **stopped)
    client = Client(url, verbose=False)
    job = client.submit(f"Talk {marker} [[tokens:400]] [[delay:0.05]]", GPT, SYSTEM, 0.5, 1024, api_name="/chat")
    wait_for(lambda: job.outputs() and answer_of(job.outputs()[-1]), 20, "the answer to start streaming", 0.05)
    assert metric(url, "relay_page_active_answers") == 1
    job.cancel()
    wait_for(lambda: metric(url, "relay_page_answers_total", **stopped) == before + 1, 5, "the stop to be counted")
    assert metric(url, "relay_page_active_answers") == 0
    [request] = requests_for(wire, marker)
    assert request.disconnected is not None, "the upstream was hung up on"


def test_metrics_count_a_page_answer_no_model_could_give(url):
    failed = dict(model=CLAUDE, outcome="failed")  # the last model tried
    before = metric(url, "relay_page_answers_total", **failed)
    outcome = chat(url, f"Fail me {tag()} [[fail:503]]", GPT)
    assert "❌ The answer could not be completed" in outcome.titles, outcome.payload_text()[:500]
    wait_for(lambda: metric(url, "relay_page_answers_total", **failed) == before + 1, 5, "the failure to be counted")
