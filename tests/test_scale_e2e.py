"""Issue 9 end to end: two ``python app.py`` replicas sharing one real Redis,
behind a real nginx running ``deploy/nginx.conf``, every provider on a local
wire server. One replica set for the module; each test uses its own API key
(identity) so the limits of one test never touch another's.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import send
from tests.e2e_support import requests_for, tag, write_catalogue
from tests.e2e_support import wire_env as base_env
from tests.scale_support import SUMMARY_TEXT, ReplicaSet, SummaryWire, api, read_sse, replica_set, text_of, wait_until

GPT, COOL, PAID = "openai:wire-gpt", "openai:wire-cool", "openai:wire-paid"
RATE = 8  # requests per minute per identity
CAP = 2  # answers streaming at once per identity
GRACE = 3.0
KEYS = {name: f"sk-{name}-{i}" for i, name in enumerate(
    ["rate", "cap", "spend", "cool", "sum", "resume", "other", "fast", "flood", "abuse", "grace", "delete"])}
PRICED = """
[[models]]
id = "openai:wire-paid"
label = "Wire Paid"
tier = "standard"
context_window = 16000
input_cost_per_mtok = 100.0
output_cost_per_mtok = 100.0
"""


@pytest.fixture(scope="module")
def wire() -> Iterator[SummaryWire]:
    with SummaryWire(ollama_models=[]) as server:
        yield server


@pytest.fixture(scope="module")
def rs(wire: SummaryWire, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaSet]:
    cwd = tmp_path_factory.mktemp("scale")
    catalogue = write_catalogue(cwd)
    catalogue.write_text(catalogue.read_text().replace("[routing]", PRICED + "\n[routing]"))
    env = base_env(
        wire, catalogue, "sk-upstream-fake",
        CHAT_LOCAL_MODEL_ENABLED="false",
        CHAT_API_KEYS=",".join(f"{name}:{key}" for name, key in KEYS.items()),
        CHAT_UI_USERS="alice:pw-alice",
        CHAT_TRUSTED_PROXIES="127.0.0.1",
        CHAT_RATE_LIMIT=f"{RATE}/minute",
        CHAT_MAX_CONCURRENT_STREAMS=str(CAP),
        CHAT_DAILY_BUDGET_USD="0.002",
        CHAT_RESUME_GRACE=str(GRACE),
        CHAT_SSE_HEARTBEAT="1",
        CHAT_BODY_TIMEOUT="1.5",
        CHAT_COOLDOWN_SECONDS="30",
        CHAT_SUMMARY_THRESHOLD="400",
        CHAT_SUMMARY_MAX_TOKENS="60",
    )
    with replica_set(env, cwd) as replicas:
        yield replicas


def ask(text: str, model: str = GPT, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def stream(url: str, key: str, text: str, *, model: str = GPT, resumable: bool = False, client: httpx.Client):
    headers = {"Authorization": f"Bearer {key}"}
    if resumable:
        headers["X-Resumable"] = "true"
    return client.stream("POST", url + "v1/chat/completions", json=ask(text, model, stream=True), headers=headers)


# -- who is calling -------------------------------------------------------------------------


def test_no_key_wrong_key_and_a_key_in_the_query_string_get_401_and_health_stays_open(rs):
    a, b = rs.replicas
    for url in (a, rs.front):
        none = api(url, None, ask("hi"))
        assert none.status_code == 401 and none.json()["error"]["code"] == "missing_api_key"
        assert "Authorization: Bearer" in none.json()["error"]["message"]
        wrong = api(url, "sk-not-a-key", ask("hi"))
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        query = httpx.post(url + f"v1/chat/completions?api_key={KEYS['abuse']}&key={KEYS['abuse']}",
                           json=ask("hi"), timeout=10)
        assert query.status_code == 401, "a key in the query string is ignored"
        assert api(url, None, method="GET", path="metrics").status_code == 401
        assert api(url, KEYS["abuse"], method="GET", path="metrics").status_code == 200
        assert httpx.get(url + "health", timeout=30).status_code == 200
    with httpx.Client(timeout=30) as page:  # a logged-in browser, lured to another site
        assert page.post(rs.front + "login", data={"username": "alice", "password": "pw-alice"}).status_code == 200
        assert page.get(rs.front + "config").status_code == 200
        lured = page.get(rs.front + "config", headers={"Origin": "https://evil.example"})
        assert lured.status_code == 403 and "alice" not in lured.text
    for log in rs.logs:
        text = log.read_text()
        assert "sk-not-a-key" not in text and KEYS["abuse"] not in text, "keys are never logged"


def test_a_body_that_arrives_slowly_gets_408_while_the_server_keeps_serving(rs):
    url = rs.replicas[0]
    body = b'{"model": "openai:wire-gpt", "messages": [{"role": "user", "content": "slow"}]}'
    result: dict = {}

    def slow_body():
        yield body[:20]
        time.sleep(3)
        yield body[20:]

    def send_slowly():
        result["response"] = httpx.post(url + "v1/chat/completions", content=slow_body(), timeout=10, headers={
            "Authorization": f"Bearer {KEYS['abuse']}", "Content-Type": "application/json"})

    worker = threading.Thread(target=send_slowly)
    worker.start()
    time.sleep(0.3)
    started = time.monotonic()
    quick = api(url, KEYS["abuse"], ask("meanwhile"))
    assert quick.status_code == 200 and time.monotonic() - started < 2, "others are served while the body dawdles"
    worker.join(10)
    slow = result["response"]
    assert slow.status_code == 408 and "CHAT_BODY_TIMEOUT" in slow.json()["error"]["message"]


# -- limits across replicas ------------------------------------------------------------------


def test_a_rate_limit_of_n_is_enforced_across_both_replicas_with_the_headers(rs):
    a, b = rs.replicas
    remaining = []
    for i in range(RATE):
        response = api((a, b)[i % 2], KEYS["rate"], ask(f"hello {i}"))
        assert response.status_code == 200, response.text
        assert response.headers["X-RateLimit-Limit"] == str(RATE)
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert int(response.headers["X-RateLimit-Reset"]) > time.time()
    assert remaining == list(range(RATE - 1, -1, -1)), "both replicas count the same requests"
    for url in (a, b, rs.front):
        refused = api(url, KEYS["rate"], ask("one more"))
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and "Try again in" in error["message"]
        retry = int(refused.headers["Retry-After"])
        assert 1 <= retry <= 60 and abs(int(refused.headers["retry-after-ms"]) / 1000 - retry) <= 1
        assert refused.headers["X-RateLimit-Remaining"] == "0" and refused.headers["X-RateLimit-Limit"] == str(RATE)
    models = api(b, KEYS["rate"], method="GET", path="v1/models")
    assert models.status_code == 200 and models.headers["X-RateLimit-Remaining"] == "0", "on every API response"


def test_the_concurrency_cap_counts_streams_on_both_replicas(rs, wire):
    a, b = rs.replicas
    marker = tag()
    with httpx.Client(timeout=30) as c1, httpx.Client(timeout=30) as c2:
        with stream(a, KEYS["cap"], f"{marker} [[tokens:200]] [[delay:0.05]]", client=c1) as s1, \
                stream(b, KEYS["cap"], f"{marker} [[tokens:200]] [[delay:0.05]]", client=c2) as s2:
            assert s1.status_code == s2.status_code == 200
            third = api(rs.front, KEYS["cap"], ask("third"))
            assert third.status_code == 429 and third.json()["error"]["code"] == "concurrency_limit_exceeded"
            assert "at most 2" in third.json()["error"]["message"] and third.headers["Retry-After"]
        # Both streams closed by the client: their leases are released.
        wait_until(lambda: api(b, KEYS["cap"], ask("after")).status_code == 200, 5, "a lease to be free again")


def test_20_parallel_streams_from_one_identity_get_the_cap_and_clear_429s(rs):
    statuses: list[int] = []
    messages: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            with stream(rs.front, KEYS["flood"], f"flood {i} [[tokens:20]] [[delay:0.1]]", client=client) as r:
                r.read()
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code == 429:
                        messages.append(r.json()["error"]["message"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(statuses) == 20 and statuses.count(200) == CAP and statuses.count(429) == 20 - CAP
    assert all("Try again" in m for m in messages)
    assert httpx.get(rs.front + "health", timeout=30).status_code == 200


def test_the_daily_budget_refuses_on_both_replicas_and_says_when_it_resets(rs):
    a, b = rs.replicas
    for i in range(6):
        response = api((a, b)[i % 2], KEYS["spend"], ask(f"spend some money {i}", PAID))
        if response.status_code == 429:
            break
        assert response.status_code == 200, response.text
    else:
        pytest.fail("the budget was never reached")
    assert i >= 1, "the first request was within the budget"
    for url in (a, b):
        refused = wait_until(lambda u=url: (r := api(u, KEYS["spend"], ask("more", PAID))).status_code == 429 and r,
                             3, "the spend to be seen")
        error = refused.json()["error"]
        assert error["code"] == "insufficient_quota" and "budget" in error["message"]
        assert "resets at 00:00 UTC" in error["message"] and int(refused.headers["Retry-After"]) > 0
    assert api(a, KEYS["other"], ask("another identity is not affected", PAID)).status_code == 200


# -- shared state ------------------------------------------------------------------------------


def test_a_cooldown_caused_on_one_replica_shows_on_the_other(rs):
    a, b = rs.replicas
    response = api(a, KEYS["cool"], ask("[[fail:503@wire-cool]] [[retry-after:40@wire-cool]] cool", COOL))
    assert response.status_code == 200 and response.headers["X-Fallback-Used"] == "true"

    def cooling_on_b():
        entry = next(m for m in api(b, KEYS["cool"], method="GET", path="v1/models").json()["data"] if m["id"] == COOL)
        return entry if entry["state"] == "cooling down" else None

    entry = wait_until(cooling_on_b, 5, "the bench to reach replica B")
    assert entry["cooldown_until"]
    health = httpx.get(b + "health", timeout=30).json()
    assert [c["model"] for c in health["cooling_down"]] == [COOL] and health["status"] == "degraded"
    with httpx.Client(timeout=30) as page:  # the page is behind the login here
        assert page.post(b + "login", data={"username": "alice", "password": "pw-alice"}).status_code == 200
        menu = page.post(b + "gradio_api/run/refresh_models", json={"data": ["auto"]})
    label = next(label for label, value in menu.json()["data"][0]["choices"] if value == COOL)
    assert "cooling down" in label.lower(), label


def test_a_summary_made_by_one_replica_is_reused_by_the_other(rs, wire):
    a, b = rs.replicas
    marker = tag()
    history = []
    for i in range(8):
        history.append({"role": "user", "content": f"{marker} turn {i}: " + "tell me about rivers and cities " * 12})
        history.append({"role": "assistant", "content": f"answer {i}: " + "rivers run through cities " * 12})
    before = len(wire.summary_requests)
    first = api(a, KEYS["sum"], {"model": GPT, "messages": [*history, {"role": "user", "content": "next?"}]})
    assert first.status_code == 200
    assert len(wire.summary_requests) == before + 1, "replica A summarized once"
    second = api(b, KEYS["sum"], {"model": GPT, "messages": [
        *history, {"role": "user", "content": "next?"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and then?"}]})
    assert second.status_code == 200
    assert len(wire.summary_requests) == before + 1, "replica B reused the summary: no second summary request"
    sent = [r for r in requests_for(wire, "and then?")]
    assert sent and any(SUMMARY_TEXT in str(m.get("content")) for m in sent[-1].body["messages"])


# -- resumable streams -------------------------------------------------------------------------------


def test_a_stream_started_on_one_replica_is_resumed_on_the_other_with_nothing_missing_or_repeated(rs):
    a, b = rs.replicas
    with httpx.Client(timeout=30) as client:
        with stream(a, KEYS["resume"], "[[tokens:60]] [[delay:0.04]] resume me", resumable=True,
                    client=client) as first:
            assert first.headers["X-Resumable"] == "true"
            stream_id = first.headers["X-Stream-Id"]
            ids1, docs1, done1 = read_sse(first, stop_after_ids=6)
    assert not done1 and ids1 == list(range(1, len(ids1) + 1))
    time.sleep(0.5)  # the answer goes on without a client
    headers = {"Authorization": f"Bearer {KEYS['resume']}", "Last-Event-ID": str(ids1[-1])}
    with httpx.Client(timeout=30) as client:
        with client.stream("GET", b + f"v1/streams/{stream_id}", headers=headers) as second:
            assert second.status_code == 200 and second.headers["X-Model-Name"] == GPT
            ids2, docs2, done2 = read_sse(second)
    assert done2
    assert ids1 + ids2 == list(range(1, len(ids1) + len(ids2) + 1)), "each event exactly once, in order"
    assert text_of(docs1 + docs2) == "".join(f"w{i} " for i in range(60))


def test_resuming_is_refused_clearly_for_another_identity_an_unknown_id_and_a_bad_last_event_id(rs):
    a, b = rs.replicas
    with httpx.Client(timeout=30) as client:
        with stream(a, KEYS["resume"], "[[tokens:30]] [[delay:0.05]] mine", resumable=True, client=client) as s:
            stream_id = s.headers["X-Stream-Id"]
            read_sse(s, stop_after_ids=2)
    other = api(b, KEYS["other"], method="GET", path=f"v1/streams/{stream_id}")
    assert other.status_code == 403 and other.json()["error"]["code"] == "stream_forbidden"
    assert api(b, KEYS["other"], method="DELETE", path=f"v1/streams/{stream_id}").status_code == 403
    unknown = api(b, KEYS["resume"], method="GET", path="v1/streams/chatcmpl-000000000000000000000000")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "stream_not_found"
    for bad in ("abc", "-1", "1.5", "9" * 40):
        response = api(b, KEYS["resume"], method="GET", path=f"v1/streams/{stream_id}",
                       headers={"Last-Event-ID": bad})
        assert response.status_code == 400 and "Last-Event-ID" in response.json()["error"]["message"]
    assert httpx.get(b + "health?live=1", timeout=5).status_code == 200


def test_delete_on_the_other_replica_stops_generation_at_once(rs, wire):
    a, b = rs.replicas
    marker = tag()
    with httpx.Client(timeout=30) as client:
        with stream(a, KEYS["delete"], f"{marker} [[tokens:400]] [[delay:0.05]]", resumable=True, client=client) as s:
            stream_id = s.headers["X-Stream-Id"]
            read_sse(s, stop_after_ids=2)
    deleted = api(b, KEYS["delete"], method="DELETE", path=f"v1/streams/{stream_id}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    at = time.monotonic()
    record = requests_for(wire, marker)[0]
    wait_until(lambda: record.disconnected is not None, 3, "the upstream to see the stop")
    assert record.disconnected - at < 1.5
    ids, docs, done = read_sse(api_stream_get(b, KEYS["delete"], stream_id))
    assert done and docs[-1]["error"]["code"] == "stream_stopped"


def api_stream_get(url: str, key: str, stream_id: str) -> httpx.Response:
    response = httpx.get(url + f"v1/streams/{stream_id}", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    response.iter_lines = lambda: iter(response.text.splitlines())  # type: ignore[method-assign]
    return response


def test_no_reconnect_within_the_grace_period_cancels_upstream(rs, wire):
    a, _ = rs.replicas
    marker = tag()
    with httpx.Client(timeout=30) as client:
        with stream(a, KEYS["grace"], f"{marker} [[tokens:400]] [[delay:0.05]]", resumable=True, client=client) as s:
            read_sse(s, stop_after_ids=2)
    left = time.monotonic()
    record = requests_for(wire, marker)[0]
    time.sleep(GRACE - 1)
    assert record.disconnected is None, "the answer goes on during the grace period"
    wait_until(lambda: record.disconnected is not None, GRACE + 3, "the upstream to be cancelled")
    assert GRACE - 0.5 <= record.disconnected - left <= GRACE + 2


def test_without_x_resumable_a_disconnect_still_stops_at_once(rs, wire):
    marker = tag()
    with httpx.Client(timeout=30) as client:
        with stream(rs.replicas[1], KEYS["abuse"], f"{marker} [[tokens:400]] [[delay:0.05]]", client=client) as s:
            assert s.headers["X-Stream-Id"] and "X-Resumable" not in s.headers
            read_sse(s, stop_after_ids=2)
            gone = time.monotonic()
    record = requests_for(wire, marker)[0]
    wait_until(lambda: record.disconnected is not None, 2, "the upstream to see the disconnect")
    assert record.disconnected - gone < 0.5


# -- nginx ------------------------------------------------------------------------------------------------


def first_chunk_after(url: str, key: str) -> tuple[float, float]:
    """Seconds to the first text chunk, and from it to the second."""
    with httpx.Client(timeout=30) as client:
        started = time.monotonic()
        with stream(url, key, "[[tokens:3]] [[delay:0.4]] [[stall:0.2]]", client=client) as s:
            seen = []
            for line in s.iter_lines():
                if line.startswith("data: {") and '"content"' in line:
                    seen.append(time.monotonic() - started)
                    if len(seen) == 2:
                        break
    return seen[0], seen[1] - seen[0]


def test_through_nginx_the_first_chunk_arrives_within_50_ms_of_the_direct_path(rs):
    direct = sorted(first_chunk_after(rs.replicas[0], KEYS["fast"]) for _ in range(3))
    proxied = sorted(first_chunk_after(rs.front, KEYS["fast"]) for _ in range(3))
    assert proxied[1][0] - direct[1][0] < 0.05, (direct, proxied)
    assert all(gap > 0.25 for _, gap in proxied), "chunks are not held back (no buffering)"


def test_the_page_works_through_nginx_in_chromium_with_login(rs, browser, artifacts_dir, wire):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(rs.front, wait_until="load")
    page.get_by_label("username").fill("alice")
    page.get_by_label("password").fill("pw-alice")
    page.get_by_role("button", name="Login").click()
    box = page.locator("textarea").first
    box.wait_for(timeout=30_000)
    marker = tag()
    send(page, box, f"{marker} [[tokens:400]] [[delay:0.03]] tell a story")
    page.locator('[data-testid="stop-button"]').wait_for(timeout=30_000)
    bot = page.locator('[data-testid="bot"]')
    wait_until(lambda: "w20" in "\n".join(bot.all_inner_texts()), 20, "the answer to stream in")
    page.locator('[data-testid="stop-button"]').click()
    page.locator('[data-testid="stop-button"]').wait_for(state="detached", timeout=5_000)
    record = requests_for(wire, marker)[0]
    wait_until(lambda: record.disconnected is not None, 3, "Stop to reach the upstream")

    def words() -> list[str]:  # the answer's words (Stop may still settle the notes' titles)
        return re.findall(r"\bw\d+\b", "\n".join(bot.all_inner_texts()))

    after = words()
    time.sleep(0.8)
    assert words() == after and "w399" not in after, "nothing arrives after Stop"
    page.screenshot(path=str(artifacts_dir / "scale-page-through-nginx.png"), full_page=True)
    page.close()


def test_the_openai_sdk_reads_numbered_events_and_heartbeats_between_them_through_nginx(rs):
    import openai

    with openai.OpenAI(base_url=rs.front + "v1", api_key=KEYS["abuse"], max_retries=0, timeout=30) as sdk:
        chunks = list(sdk.chat.completions.create(
            model=GPT, stream=True, messages=[{"role": "user", "content": "[[tokens:4]] [[stall:2.5:2]] pause"}],
            extra_headers={"X-Resumable": "true"}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "w0 w1 w2 w3 "
