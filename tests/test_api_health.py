"""``/health`` of ``python app.py``: live checks of each provider on the wire
server, the cache that spares them, a cooldown (degraded), every provider
gone (503 down) and back, and the liveness probe that touches nothing.
This module's wire server lists an Ollama model, so the API's Ollama ids are
checked here too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from tests.api_support import post_stream
from tests.e2e_support import run_app, tag, wait_for, wire_env, write_catalogue
from tests.wire import WireServer

TTL = 1.0


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    server = WireServer(ollama_models=["llama3.2:latest"]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def url(wire: WireServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cwd = tmp_path_factory.mktemp("health-app")
    env = wire_env(wire, write_catalogue(cwd), "sk-e2e-health-fake", CHAT_LOCAL_MODEL_ENABLED="false",
                   CHAT_HEALTH_TTL=str(TTL), CHAT_CONNECT_TIMEOUT="2")
    with run_app(env, cwd, cwd / "app.log") as app_url:
        yield app_url


def probes(wire: WireServer) -> list[str]:
    """The health calls the wire server received (not chat requests)."""
    return [f"{r.method} {r.path}" for r in wire.requests if r.method == "GET" and r.path != "/api/tags"]


def health(url: str) -> httpx.Response:
    return httpx.get(url + "health", timeout=30)


def test_each_provider_is_checked_live_and_the_checks_are_reused(url, wire):
    time.sleep(TTL)  # whatever start-up checked has expired
    before = len(probes(wire))
    first = health(url)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["status"] == "ok"
    providers = body["providers"]
    assert set(providers) >= {"openai", "anthropic", "ollama"}
    for name in ("openai", "anthropic", "ollama"):
        assert providers[name]["status"] == "ok", providers[name]
        assert providers[name]["latency_ms"] >= 0 and providers[name]["models"] >= 1
    assert providers["ollama"]["detail"] == "version 0.6.3-wire"
    calls = probes(wire)[before:]
    assert sorted(calls) == ["GET /api/version", "GET /v1/models", "GET /v1/models?limit=1"], calls
    # A load balancer polling within the TTL gets the same checks, with no new calls.
    for _ in range(5):
        assert health(url).json()["providers"] == providers
    assert len(probes(wire)) == before + 3


def test_the_liveness_probe_touches_nothing(url, wire):
    before = len(wire.requests)
    time.sleep(TTL)
    response = httpx.get(url + "health?live=1", timeout=10)
    assert response.status_code == 200 and response.json() == {"status": "alive"}
    assert len(wire.requests) == before


@pytest.mark.parametrize("model", ["ollama:llama3.2:latest", "ollama:llama3.2"])
def test_an_ollama_model_answers_with_or_without_its_latest_tag(url, wire, model):
    marker = tag()
    response = httpx.post(url + "v1/chat/completions", timeout=30, json={
        "model": model, "messages": [{"role": "user", "content": f"Hi {marker}"}]})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == f"Echo: Hi {marker}"
    assert response.headers["x-model-name"] == "ollama:llama3.2:latest"
    [upstream] = [r for r in wire.chat_requests if marker in str(r.body)]
    assert upstream.protocol == "ollama" and upstream.body["model"] == "llama3.2:latest"


def test_a_model_cooling_down_makes_health_degraded_and_shows_until_when(url):
    out = post_stream(url, {"model": "openai:wire-cool", "messages": [
        {"role": "user", "content": f"Hi {tag()} [[fail:429@wire-cool]] [[retry-after:60]]"}]})
    assert out.status == 200 and out.headers["x-fallback-used"] == "true"
    response = health(url)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    [cooling] = body["cooling_down"]
    assert cooling["model"] == "openai:wire-cool" and "rate limited" in cooling["reason"]
    until = datetime.fromisoformat(cooling["until"].replace("Z", "+00:00")).timestamp()
    assert 30 < until - time.time() <= 61
    listed = {m["id"]: m for m in httpx.get(url + "v1/models", timeout=10).json()["data"]}
    assert listed["openai:wire-cool"]["state"] == "cooling down"
    assert listed["openai:wire-cool"]["cooldown_until"] == cooling["until"]


def test_no_provider_answering_is_503_down_and_it_recovers(url, wire):
    port = wire.port
    wire.stop()
    try:
        time.sleep(TTL)
        response = health(url)
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "down" and body["models"]["can_answer"] == 0
        for name in ("openai", "anthropic", "ollama"):
            assert body["providers"][name]["status"] == "error"
            assert "connection failed" in body["providers"][name]["detail"], body["providers"][name]
        assert httpx.get(url + "health?live=1", timeout=10).status_code == 200, "alive, though it cannot answer"
    finally:
        revived = WireServer(port=port, ollama_models=["llama3.2:latest"]).start()
    try:
        assert wait_for(lambda: health(url).status_code == 200, 10, "health to recover", interval=0.3)
    finally:
        revived.stop()
