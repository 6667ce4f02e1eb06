"""The streaming hot path: what the page path adds to an upstream's stream.

A wire server (``python -m tests.wire --keep-alive``, its own process, keeping
connections open between requests as providers' servers do) plays an
OpenAI-compatible upstream; ``python app.py`` (its own process, no embedded
model, no Ollama) points at it. A raw client speaks Gradio's queue protocol as
the page does — ``POST /gradio_api/queue/join`` then the SSE stream
``GET /gradio_api/queue/data`` — for the event that streams the answer
(``_submit_fn``, after ``_clear_and_save_textbox`` stored the message, as in the
browser). Never ``gradio_client``: its polling adds ~100 ms of its own. The same
upstream is measured directly in the same run (raw HTTP, same request body).

Scenarios (upstream: first token at 100 ms, then 500 tokens/s, 200 tokens):
  one      1 stream at a time, direct and page alternating
  twenty   20 concurrent streams per round, direct rounds and page rounds alternating
           (the 20 tabs send their messages, then the 20 answers stream at once)
  long     one 4,000-token answer at 1,000 tokens/s, direct then page; and the
           same answer through the ``/chat`` API route (its SSE bytes only)

Prints one JSON line:
  one_added_ttft_ms_p50/p95     page TTFT − direct TTFT (each percentile from its own runs)
  twenty_added_ttft_ms_p50/p95  the same with 20 concurrent streams
  twenty_cpu_us_per_token       app CPU (utime+stime of the app process, /proc/<pid>/stat)
                                while the 20 answers stream ÷ tokens streamed
  twenty_fixed_cpu_ms_per_answer  the same for 20 one-token answers, per answer: what
                                an answer costs whatever its length (Gradio's event,
                                the SDK's request); twenty_stream_cpu_us_per_token is
                                the rest per token (the streaming hot path itself)
  send_cpu_ms_per_message       the page's message event before each answer (the
                                textbox and its validator), measured apart
  long_sse_bytes / long_text_bytes / long_bytes_ratio   page SSE bytes for the answer
  long_time_ratio               page total time ÷ direct total time
  long_cpu_us_per_token, api_long_bytes_ratio
and the targets. Run it under the heavy-work lock on a shared machine:

    flock /tmp/relay-heavy.lock python bench/ui_path.py [--one 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

import httpx  # noqa: E402

from tests.servers import cpu_seconds, free_port, stop_process, wait_http  # noqa: E402

STREAM = "[[stall:0.1]] [[rate:500]] [[tokens:200]]"
LONG = "[[rate:1000]] [[tokens:4000]]"
MODEL = "openai:wire-gpt"
SYSTEM = "Be brief."
TARGETS = {"one_added_ttft_ms_p50": 10, "one_added_ttft_ms_p95": 20, "twenty_added_ttft_ms_p95": 100,
           "twenty_cpu_us_per_token": 50, "long_bytes_ratio": 3.0, "long_time_ratio": 1.05}
CATALOGUE = f"""\
[[models]]
id = "{MODEL}"
label = "Wire GPT"
tier = "fast"
context_window = 16000
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- the two clients ----------------------------------------------------------------


class Run:
    """One answer as a client saw it (times from ``time.perf_counter``)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self.ended = 0.0
        self.text = ""
        self.sse_bytes = 0

    @property
    def ttft(self) -> float:
        assert self.first is not None, "no text arrived"
        return self.first - self.started


async def direct(client: httpx.AsyncClient, wire: str, prompt: str) -> Run:
    """The upstream alone: the request body the app sends, read as raw SSE."""
    body = {"model": "wire-gpt", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]}
    run = Run()
    parts: list[str] = []
    async with client.stream("POST", f"{wire}/v1/chat/completions", json=body,
                             headers={"Authorization": "Bearer sk-bench"}) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                if text := (choice.get("delta") or {}).get("content"):
                    if run.first is None:
                        run.first = time.perf_counter()
                    parts.append(text)
    run.ended = time.perf_counter()
    run.text = "".join(parts)
    return run


class Page:
    """A browser tab's queue protocol against the app."""

    def __init__(self, client: httpx.AsyncClient, url: str, config: dict[str, Any]) -> None:
        self.client, self.url = client, url
        names = [d.get("api_name") for d in config["dependencies"]]
        self.save_input = names.index("_clear_and_save_textbox")
        self.submit = names.index("_submit_fn")
        self.api = names.index("chat")

    async def _event(self, session: str, fn_index: int, data: list[Any], run: Run | None, output: int) -> Run:
        run = run or Run()
        payload = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
        (await self.client.post(f"{self.url}gradio_api/queue/join", json=payload)).raise_for_status()
        value: Any = None
        buffer = b""
        async with self.client.stream("GET", f"{self.url}gradio_api/queue/data?session_hash={session}") as stream:
            async for raw in stream.aiter_raw():
                run.sse_bytes += len(raw)
                buffer += raw
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    message = json.loads(line[5:])
                    kind = message.get("msg")
                    if kind in ("process_generating", "process_completed"):
                        data_out = (message.get("output") or {}).get("data") or [None] * (output + 1)
                        value = apply(value, data_out[output], full=kind == "process_completed" or value is None)
                        if run.first is None and answer_of(value):
                            run.first = time.perf_counter()
                    if kind in ("process_completed", "close_stream"):
                        run.ended = time.perf_counter()
                        run.text = answer_of(value)
                        return run
        raise RuntimeError("the queue stream ended early")

    async def send(self, prompt: str, session: str) -> Run:
        """What the page does on Enter: the textbox event stores the message (validated)."""
        return await self._event(session, self.save_input, [prompt], None, output=0)

    async def stream(self, session: str) -> Run:
        """The event that streams the answer to the stored message, timed from its join."""
        return await self._event(session, self.submit, [None, None, MODEL, SYSTEM, 0.5, 8000], None, output=1)

    async def ask(self, prompt: str, session: str) -> Run:
        """Send ``prompt`` from the tab ``session`` as the page does; the answer's run.
        A tab keeps its session for every message."""
        await self.send(prompt, session)
        return await self.stream(session)

    async def ask_api(self, prompt: str, session: str) -> Run:
        """The same through the ``/chat`` route (one event)."""
        return await self._event(session, self.api, [prompt, [], MODEL, SYSTEM, 0.5, 8000], None, output=0)


def apply(value: Any, update: Any, *, full: bool) -> Any:
    """Gradio's streamed update applied: the first and the final message carry the
    whole value, the others a diff (["append"|"replace"|"add"|"delete", path, value] ops)."""
    if full or value is None:
        return update
    for op, path, *rest in update or []:
        new = rest[0] if rest else None
        if not path:
            value = new
            continue
        target = value
        for key in path[:-1]:
            target = target[key]
        key = path[-1]
        if op == "append":
            target[key] += new
        elif op == "delete":
            del target[key]
        elif op == "add" and isinstance(target, list):
            target.insert(key, new)
        else:
            target[key] = new
    return value


def answer_of(messages: Any) -> str:
    """The answer: the last assistant message without a note title."""
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "assistant" and not (message.get("metadata") or {}).get("title"):
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


# -- scenarios -------------------------------------------------------------------------


async def main(one: int, rounds: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    (workdir / "models.toml").write_text(CATALOGUE)
    wire_port, app_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "OLLAMA_", "CHAT_"))}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "GRADIO_ANALYTICS_ENABLED": "False"})
    wire_proc = subprocess.Popen([sys.executable, "-m", "tests.wire", "--port", str(wire_port), "--keep-alive"], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wire = f"http://127.0.0.1:{wire_port}"
    env.update({"OPENAI_BASE_URL": f"{wire}/v1", "OPENAI_API_KEY": "sk-bench", "CHAT_MODELS_FILE": str(workdir / "models.toml"),
                "CHAT_LOCAL_MODEL_ENABLED": "false", "CHAT_OLLAMA_ENABLED": "false", "CHAT_ENV_FILE": "",
                "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(app_port), "CHAT_LOG_LEVEL": "WARNING",
                "CHAT_MAX_CONCURRENT_STREAMS": "0"})  # every stream comes from one address
    app_log = open(workdir / "app.log", "wb")  # noqa: SIM115 - closed with the app below
    app_proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=workdir, env=env,
                                stdout=app_log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{app_port}/"
    try:
        wait_http(f"{wire}/api/version", 90, wire_proc)
        wait_http(url, 90, app_proc)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            page = Page(client, url, (await client.get(url + "config")).json())
            tabs = [uuid.uuid4().hex[:11] for _ in range(20)]
            for i in range(3):  # warm up both paths (imports, first connections)
                await direct(client, wire, f"warm {i} {STREAM}")
                await page.ask(f"warm {i} {STREAM}", tabs[0])
            # Each tab's first message sets up its session: not part of the figures.
            await asyncio.gather(*(page.ask(f"hello {STREAM}", tab) for tab in tabs))
            return await scenarios(client, page, tabs, wire, app_proc.pid, one, rounds)
    finally:
        for proc in (app_proc, wire_proc):
            stop_process(proc)
        app_log.close()


async def scenarios(client: httpx.AsyncClient, page: Page, tabs: list[str], wire: str, pid: int, one: int,
                    rounds: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    one_direct, one_page = [], []
    for i in range(one):
        one_direct.append(await direct(client, wire, f"one {tag} {i} {STREAM}"))
        one_page.append(await page.ask(f"one {tag} {i} {STREAM}", tabs[0]))

    twenty_direct: list[Run] = []
    twenty_page: list[Run] = []
    cpu = send_cpu = fixed_cpu = 0.0
    for r in range(rounds):
        twenty_direct += await asyncio.gather(*(direct(client, wire, f"twenty {tag} {r} {i} {STREAM}") for i in range(20)))
        await asyncio.sleep(0.3)
        # Each tab sends its message, then (all sent) the 20 answers stream at once:
        # the CPU of the streams and of the sends is measured apart.
        before = cpu_seconds(pid)
        await asyncio.gather(*(page.send(f"twenty {tag} {r} {i} {STREAM}", tab) for i, tab in enumerate(tabs)))
        send_cpu += cpu_seconds(pid) - before
        before = cpu_seconds(pid)
        twenty_page += await asyncio.gather(*(page.stream(tab) for tab in tabs))
        cpu += cpu_seconds(pid) - before
        await asyncio.sleep(0.3)
        # The same with one-token answers: what an answer costs whatever its length.
        await asyncio.gather(*(page.send(f"fixed {tag} {r} {i} [[tokens:1]]", tab) for i, tab in enumerate(tabs)))
        before = cpu_seconds(pid)
        await asyncio.gather(*(page.stream(tab) for tab in tabs))
        fixed_cpu += cpu_seconds(pid) - before
        await asyncio.sleep(0.3)
    twenty_tokens = sum(len(run.text.split()) for run in twenty_page)
    answers = 20 * rounds

    long_direct = await direct(client, wire, f"long {tag} {LONG}")
    await asyncio.sleep(0.3)
    before = cpu_seconds(pid)
    long_page = await page.ask(f"long {tag} {LONG}", tabs[0])
    long_cpu = cpu_seconds(pid) - before
    long_api = await page.ask_api(f"long api {tag} {LONG}", tabs[1])

    for run in [*one_page, *twenty_page, long_page, long_api]:
        assert run.text and run.text.startswith("w0 "), f"unexpected answer: {run.text[:80]!r}"
    text_bytes = len(long_page.text.encode())

    def ms(runs: list[Run], q: float) -> float:
        return percentile([run.ttft for run in runs], q) * 1000

    return {
        "bench": "ui_path",
        "one_runs": one,
        "one_direct_ttft_ms_p50": round(ms(one_direct, 0.5), 1),
        "one_page_ttft_ms_p50": round(ms(one_page, 0.5), 1),
        "one_added_ttft_ms_p50": round(ms(one_page, 0.5) - ms(one_direct, 0.5), 1),
        "one_added_ttft_ms_p95": round(ms(one_page, 0.95) - ms(one_direct, 0.95), 1),
        "twenty_rounds": rounds,
        "twenty_direct_ttft_ms_p95": round(ms(twenty_direct, 0.95), 1),
        "twenty_page_ttft_ms_p95": round(ms(twenty_page, 0.95), 1),
        "twenty_added_ttft_ms_p50": round(ms(twenty_page, 0.5) - ms(twenty_direct, 0.5), 1),
        "twenty_added_ttft_ms_p95": round(ms(twenty_page, 0.95) - ms(twenty_direct, 0.95), 1),
        "twenty_cpu_us_per_token": round(cpu / twenty_tokens * 1e6, 1),
        "twenty_cpu_ms_per_answer": round(cpu / answers * 1000, 2),
        "twenty_fixed_cpu_ms_per_answer": round(fixed_cpu / answers * 1000, 2),
        "twenty_stream_cpu_us_per_token": round((cpu - fixed_cpu) / twenty_tokens * 1e6, 1),
        "send_cpu_ms_per_message": round(send_cpu / answers * 1000, 2),
        "twenty_sse_bytes_per_answer": round(statistics.mean(run.sse_bytes for run in twenty_page)),
        "long_text_bytes": text_bytes,
        "long_sse_bytes": long_page.sse_bytes,
        "long_bytes_ratio": round(long_page.sse_bytes / text_bytes, 2),
        "long_direct_s": round(long_direct.ended - long_direct.started, 3),
        "long_page_s": round(long_page.ended - long_page.started, 3),
        "long_time_ratio": round((long_page.ended - long_page.started) / (long_direct.ended - long_direct.started), 3),
        "long_cpu_us_per_token": round(long_cpu / len(long_page.text.split()) * 1e6, 1),
        "api_long_bytes_ratio": round(long_api.sse_bytes / len(long_api.text.encode()), 2),
        "targets": TARGETS,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", type=int, default=20, help="single-stream runs per side")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of 20 concurrent streams per side")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.one, args.rounds))))
