"""Replica sets for the scale-out tests: real redis-server, ``python app.py``
replicas sharing it, real nginx in front (``deploy/nginx.conf``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.e2e_conversation import is_summary_request
from tests.nginx_server import NginxServer
from tests.redis_server import RedisServer
from tests.servers import app_process
from tests.wire import Recorded, Script, WireServer

__all__ = ["ReplicaSet", "SummaryWire", "api", "read_sse", "replica_set"]

SUMMARY_TEXT = "Summary: the earlier turns were about cities, rivers and mountains."


class SummaryWire(WireServer):
    """The wire server, with a short fixed answer to summary requests (counted)."""

    def _is_summary(self, record: Recorded) -> bool:
        return isinstance(record.body, dict) and is_summary_request(record.body)

    @property
    def summary_requests(self) -> list[Recorded]:
        return [r for r in self.chat_requests if self._is_summary(r)]

    async def _route(self, record, ex) -> None:  # type: ignore[no-untyped-def]
        if record.method == "POST" and self._is_summary(record):
            words = SUMMARY_TEXT.split(" ")
            self.enqueue(Script(tokens=[words[0]] + [" " + w for w in words[1:]]))
        await super()._route(record, ex)


@dataclass
class ReplicaSet:
    redis: RedisServer
    replicas: list[str]
    nginx: NginxServer | None
    logs: list[Path] = field(default_factory=list)

    @property
    def front(self) -> str:
        return self.nginx.url if self.nginx else self.replicas[0]


@contextmanager
def replica_set(env: dict[str, str], cwd: Path, *, replicas: int = 2, with_nginx: bool = True,
                redis_port: int | None = None) -> Iterator[ReplicaSet]:
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer(redis_port or free_port(), cwd / "redis"))
        ports = [free_port() for _ in range(replicas)]
        urls, logs = [], []
        for i, port in enumerate(ports):
            log = cwd / f"replica-{i}.log"
            logs.append(log)
            urls.append(stack.enter_context(app_process(
                port, env={**env, "REDIS_URL": redis.url}, cwd=cwd, log_path=log)))
        nginx = stack.enter_context(NginxServer(free_port(), ports, cwd / "nginx")) if with_nginx else None
        yield ReplicaSet(redis, urls, nginx, logs)


def api(url: str, key: str | None, body: dict[str, Any] | None = None, *, method: str = "POST",
        path: str = "v1/chat/completions", headers: dict[str, str] | None = None, timeout: float = 30) -> httpx.Response:
    h = {"Authorization": f"Bearer {key}"} if key else {}
    h.update(headers or {})
    return httpx.request(method, url + path, json=body, headers=h, timeout=timeout)


def read_sse(response: httpx.Response, *, stop_after_ids: int | None = None) -> tuple[list[int], list[dict], bool]:
    """(event ids, JSON documents, whether [DONE] came) of a streamed response,
    stopping after ``stop_after_ids`` numbered events."""
    ids: list[int] = []
    docs: list[dict] = []
    done = False
    for line in response.iter_lines():
        if line.startswith("id: "):
            ids.append(int(line[4:]))
        elif line.startswith("data: "):
            if line[6:] == "[DONE]":
                done = True
                break
            docs.append(json.loads(line[6:]))
            if stop_after_ids is not None and len(ids) >= stop_after_ids:
                break
    return ids, docs, done


def text_of(docs: list[dict]) -> str:
    return "".join(d["choices"][0]["delta"].get("content") or "" for d in docs
                   if d.get("object") == "chat.completion.chunk" and d["choices"])


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
