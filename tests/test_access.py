"""Identity at the edge: API keys, page logins, trusted proxies, the
same-origin guard, and the gate's messages (``chat.access``, ``chat.origins``)."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from chat.access import ApiKeys, Gate, Identity, Refused, TrustedProxies, parse_rate_limit, ui_auth
from chat.catalogue import load_catalogue
from chat.origins import SameOriginMiddleware
from chat.store import MemoryStore
from tests.test_context import settings


def test_api_keys_with_and_without_names():
    keys = ApiKeys("alice:sk-a, sk-plain ,bob:sk-b:with-colon")
    assert keys.names == ["alice", "key2", "bob"]
    assert keys.match("sk-a") == "alice" and keys.match("sk-plain") == "key2"
    assert keys.match("sk-b:with-colon") == "bob"
    assert keys.match("sk-A") is None and keys.match("") is None
    assert not ApiKeys("") and not ApiKeys(" , ")
    for bad, said in (("alice:", "entry 1"), ("a:x,a:y", "twice")):
        with pytest.raises(ValueError, match=said):
            ApiKeys(bad)


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    proxies = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    assert proxies.client("203.0.113.9", ["1.2.3.4"]) == "203.0.113.9", "an untrusted peer cannot choose"
    assert proxies.client("127.0.0.1", ["1.2.3.4"]) == "1.2.3.4"
    assert proxies.client("127.0.0.1", ["6.6.6.6, 1.2.3.4, 10.1.2.3"]) == "1.2.3.4", "read from the right"
    assert TrustedProxies("").client("127.0.0.1", ["1.2.3.4"]) == "127.0.0.1"
    with pytest.raises(ValueError, match="not an address"):
        TrustedProxies("localhost")


def test_page_logins():
    assert ui_auth(None, None) is None
    shared = ui_auth("open-sesame", None)
    assert shared("anyone", "open-sesame") and not shared("anyone", "wrong") and not shared("", "open-sesame")
    users = ui_auth(None, "alice:pw1,bob:pw2")
    assert users("alice", "pw1") and users("bob", "pw2")
    assert not users("alice", "pw2") and not users("carol", "pw1")
    with pytest.raises(ValueError, match="entry 2"):
        ui_auth(None, "alice:pw1,bob")


def test_a_rate_limit_setting_that_is_not_one_says_what_is_allowed():
    assert [i.amount for i in parse_rate_limit("30/minute;500/day")] == [30, 500]
    with pytest.raises(ValueError, match="30/minute"):
        parse_rate_limit("thirty a minute")


async def test_the_tightest_rate_limit_is_reported_and_refusals_say_when():
    gate = Gate(settings(rate_limit="5/minute;2/hour", max_concurrent_streams=0), MemoryStore(),
                lambda: load_catalogue(None, include_local=False))
    who = Identity("user", "alice")
    first = await gate.admit(who)
    assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["X-RateLimit-Remaining"] == "1"
    await gate.admit(who)
    with pytest.raises(Refused) as refused:
        await gate.admit(who)
    assert "user 'alice'" in refused.value.message and "2 requests per hour" in refused.value.message
    assert 3500 < int(refused.value.headers["Retry-After"]) <= 3600
    assert (await gate.peek(who))["X-RateLimit-Remaining"] == "0"


def app(allowed: str = "") -> TestClient:
    inner = Starlette(routes=[Route("/x", lambda r: PlainTextResponse("secret"), methods=["GET", "POST"])])
    return TestClient(SameOriginMiddleware(inner, allowed), base_url="http://relay.example:8080")


def test_browsers_on_other_sites_are_refused_and_the_page_itself_is_not():
    client = app()
    assert client.get("/x").text == "secret", "no Origin: curl, SDKs"
    assert client.post("/x", headers={"Origin": "http://relay.example:8080"}).text == "secret"
    for origin in ("https://evil.example", "null", "http://relay.example.evil.example"):
        refused = client.post("/x", headers={"Origin": origin})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed"
    assert app("https://ui.example").post("/x", headers={"Origin": "https://ui.example"}).text == "secret"
