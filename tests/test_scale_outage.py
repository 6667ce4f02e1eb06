"""Issue 9: the shared store failing and coming back, with one ``python app.py``
replica on a real redis-server that the tests stop and start; a wrong
``REDIS_URL`` at start; and a refusal on the page (a note in the chat)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api_support import metric
from tests.conftest import free_port
from tests.e2e_support import queue_chat, requests_for, tag, write_catalogue
from tests.e2e_support import wire_env as base_env
from tests.redis_server import RedisServer
from tests.scale_support import api, read_sse, text_of, wait_until
from tests.servers import ROOT, app_process, wait_http
from tests.wire import WireServer

GPT = "openai:wire-gpt"
KEY = "sk-outage-test"
DIES = "sk-dies-test"
LEASE_TTL = 2.0


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    with WireServer(ollama_models=[]) as server:
        yield server


@pytest.fixture(scope="module")
def setup(wire, tmp_path_factory):
    """The replica starts BEFORE its Redis (Redis started late); both live for the module."""
    cwd = tmp_path_factory.mktemp("outage")
    redis = RedisServer(free_port(), cwd / "redis")
    env = base_env(wire, write_catalogue(cwd), "sk-upstream-fake", CHAT_LOCAL_MODEL_ENABLED="false",
                   REDIS_URL=redis.url, CHAT_REDIS_START_WAIT="30", CHAT_RATE_LIMIT="4/minute",
                   CHAT_API_KEYS=f"ops:{KEY},dies:{DIES}", CHAT_HEALTH_TTL="0",
                   CHAT_MAX_CONCURRENT_STREAMS="1", CHAT_STREAM_LEASE_TTL=str(LEASE_TTL))
    log = cwd / "app.log"
    starter = threading.Timer(1.5, redis.start)
    starter.start()
    try:
        with app_process(free_port(), env=env, cwd=cwd, log_path=log) as url:
            starter.join()
            yield url, redis, log, env, cwd
    finally:
        starter.cancel()
        redis.stop()


def ask(text: str, **extra) -> dict:
    return {"model": GPT, "messages": [{"role": "user", "content": text}], **extra}


def test_redis_started_late_the_replica_waits_for_it_and_shares_through_it(setup):
    url, redis, log, _, _ = setup
    health = httpx.get(url + "health", timeout=30).json()
    assert health["store"] == {"backend": "redis", "state": "ok", "detail": redis.url}
    response = api(url, KEY, ask("hello"))
    assert response.status_code == 200 and response.headers["X-RateLimit-Remaining"] == "3"


def test_a_refusal_on_the_page_is_a_note_in_the_chat_saying_when_to_try_again(setup, wire):
    url, _, _, _, _ = setup
    def counted(outcome: str) -> float:
        return metric(url, "relay_page_answers_total", key=KEY, outcome=outcome)

    before = counted("ok"), counted("refused")
    last = None
    marker = tag()
    for _ in range(5):  # the page's identity here is its address; the limit is 4 a minute
        last = queue_chat(url, f"hello from the page {marker}", GPT)
    done = next(m for m in last if m.get("msg") == "process_completed")
    assert done["success"] is True, "no error overlay"
    messages = done["output"]["data"][0]
    note = messages[-1]
    assert note["metadata"]["title"].startswith("⏳")
    assert "Rate limit reached" in note["content"] and "Try again in" in note["content"]
    assert len(messages) == 1, "only the note: nothing was asked of a model"
    assert len(requests_for(wire, marker)) == 4
    assert (counted("ok"), counted("refused")) == (before[0] + 4, before[1] + 1), "/metrics counts the refusal"


def test_a_replica_that_dies_leaves_no_stuck_stream_lease(setup, wire):
    url, redis, _, env, cwd = setup
    port = free_port()
    full = {**{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "OLLAMA_"))},
            **env, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "CHAT_ENV_FILE": ""}
    doomed = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=cwd, env=full,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        other = f"http://127.0.0.1:{port}/"
        wait_http(other + "health?live=1", 90, doomed)
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", other + "v1/chat/completions", headers={"Authorization": f"Bearer {DIES}"},
                               json=ask("[[tokens:400]] [[delay:0.05]] held", stream=True)) as held:
                assert held.status_code == 200
                lines = held.iter_lines()  # kept: dropping it would close the connection
                assert next(lines).startswith("id: 1")
                refused = api(url, DIES, ask("a second stream"))
                assert refused.status_code == 429 and refused.json()["error"]["code"] == "concurrency_limit_exceeded", (refused.headers, refused.text[:300])
                doomed.send_signal(signal.SIGKILL)  # dies holding its lease
                died = time.monotonic()
                doomed.wait(10)
        time.sleep(0.3)
        assert api(url, DIES, ask("too soon")).status_code == 429, "the lease is still live for a while"
        # Requests count against the rate limit (4 a minute) even when refused: one more, once it must be free.
        time.sleep(max(0.0, died + LEASE_TTL + 0.7 - time.monotonic()))
        again = api(url, DIES, ask("again"))
        assert again.status_code == 200, again.text
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()


def test_redis_stopped_mid_run_answers_continue_health_degrades_and_it_reconnects(setup, wire):
    url, redis, log, _, _ = setup
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url + "v1/chat/completions", json=ask("[[tokens:40]] [[delay:0.05]] long", stream=True),
                           headers={"Authorization": f"Bearer {KEY}"}) as running:
            assert running.status_code == 200
            redis.stop()
            ids, docs, done = read_sse(running)
    assert done and text_of(docs) == "".join(f"w{i} " for i in range(40)), "the answer in flight finished"
    for i in range(6):  # beyond the limit of 4: limits fail open while the store is down
        started = time.monotonic()
        response = api(url, KEY, ask(f"while redis is down {i}"))
        assert response.status_code == 200 and time.monotonic() - started < 3
    health = httpx.get(url + "health", timeout=30)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "degraded" and body["store"]["state"] == "unreachable"
    assert log.read_text().count("is unreachable") == 1, "one warning per outage"

    redis.start()
    wait_until(lambda: httpx.get(url + "health", timeout=30).json()["store"]["state"] == "ok", 10, "reconnection")
    assert "is reachable again" in log.read_text()
    statuses = [api(url, KEY, ask(f"after {i}")).status_code for i in range(5)]
    assert statuses[:4] == [200] * 4 and statuses[4] == 429, "limits count again in the fresh Redis"


def start_app(env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    full = {"PATH": "/usr/bin:/bin", "CHAT_ENV_FILE": "", "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_SERVER_PORT": str(free_port()), "CHAT_LOCAL_MODEL_ENABLED": "false", **env}
    return subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=60)


def test_a_wrong_redis_url_at_start_is_a_clear_error_naming_it_without_the_password(tmp_path):
    port = free_port()
    started = time.monotonic()
    result = start_app({"REDIS_URL": f"redis://:hunter2-secret@127.0.0.1:{port}/0", "CHAT_REDIS_START_WAIT": "1"},
                       tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and time.monotonic() - started < 30
    assert f"redis://:***@127.0.0.1:{port}/0" in output and "did not answer" in output and "REDIS_URL" in output
    assert "hunter2-secret" not in output
    with RedisServer(free_port(), tmp_path / "redis", password="right-pw") as redis:
        wrong = redis.url.replace("right-pw", "wrong-pw")
        result = start_app({"REDIS_URL": wrong}, tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and "password" in output and "wrong-pw" not in output
    result = start_app({"REDIS_URL": "http://not-redis.example/"}, tmp_path)
    assert result.returncode != 0 and "not a Redis URL" in result.stdout + result.stderr

