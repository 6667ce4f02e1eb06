"""Wiring: settings → catalogue → providers → router → context → service, and
the shared state behind them: the store (in-process, or Redis with
``REDIS_URL``), the gate of limits at the edge, the cooldown mirror and the
shared summary cache.

``Runtime.build`` constructs everything without I/O (no model load, no network,
no SDK client). ``start()`` begins loading the embedded model in the
background; ``refresh()`` re-discovers Ollama models and is called on page load
and by the refresh button.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .access import Access, Gate
from .cache import MemoryKeyValue, ResponseCache
from .catalogue import LOCAL_MODEL_ID, Catalogue, load_catalogue
from .config import Settings
from .context import ContextManager
from .metrics import Metrics
from .preview import Preview
from .providers import Provider, build_providers
from .router import Router
from .service import ChatService
from .store import Store, build_store
from .store.cooldowns import SharedCooldowns
from .store.summaries import SharedSummaries
from .summarizer import RouterSummarizer
from .tokens import TokenCounter

__all__ = ["Runtime"]

log = logging.getLogger(__name__)


def response_cache(settings: Settings, store: Store) -> ResponseCache | None:
    """The response cache when ``CHAT_RESPONSE_CACHE_TTL`` is set (issue 12):
    in the shared store when there is one (Redis: every replica replays an
    answer any of them stored), else in a bounded in-process table."""
    if not settings.response_cache_ttl:
        return None
    return ResponseCache(store if store.shared else MemoryKeyValue(), settings.response_cache_ttl)


@dataclass
class Runtime:
    settings: Settings
    catalogue: Catalogue
    providers: Mapping[str, Provider]
    router: Router
    service: ChatService
    store: Store
    gate: Gate
    access: Access
    cooldown_mirror: SharedCooldowns | None = None
    metrics: Metrics = field(default_factory=Metrics)  # GET /metrics: the API's answers and the page's

    @classmethod
    def build(cls, settings: Settings, providers: Mapping[str, Provider] | None = None,
              catalogue: Catalogue | None = None, *, kept: dict[str, object] | None = None) -> Runtime:
        """``kept``: a dict that outlives hot reloads (``gradio app.py``); the
        embedded model kept there is taken over instead of loaded again."""
        catalogue = catalogue or load_catalogue(
            settings.models_file, include_local=settings.local_model_enabled
        )
        if settings.local_n_ctx:  # a smaller allocation than the GGUF's 8,192 tokens
            catalogue = catalogue.with_window(LOCAL_MODEL_ID, settings.local_n_ctx)
        if providers is None:
            providers = build_providers(settings, catalogue, kept=kept)
        access = Access.from_settings(settings)  # a bad key, user or proxy entry stops the start here
        router = Router(settings, catalogue, providers)
        store = build_store(settings)
        mirror = None
        if store.shared:
            mirror = SharedCooldowns(router.cooldowns, store, lambda: build_store(settings, quiet=True))
        context = ContextManager(settings, RouterSummarizer(router, settings), TokenCounter(),
                                 shared=SharedSummaries(store) if store.shared else None)
        service = ChatService(settings, router, context, cache=response_cache(settings, store))
        gate = Gate(settings, store, lambda: router.catalogue)
        return cls(settings, catalogue, providers, router, service, store, gate, access, mirror)

    @cached_property
    def preview(self) -> Preview:
        """Title, description, examples and the settings lock (``chat.preview``)."""
        return Preview.from_settings(self.settings)

    def start(self) -> None:
        """Start background work: load and warm up the embedded model, and
        discover Ollama's models so API callers can use them before any page
        load refreshes the list."""
        if self.cooldown_mirror is not None:
            self.cooldown_mirror.start()
        local = self.providers.get("local")
        if local is not None and hasattr(local, "start"):
            local.start()
        threading.Thread(target=asyncio.run, args=(self._discover_at_start(),), name="model-discovery",
                         daemon=True).start()

    async def _discover_at_start(self) -> None:
        """Discovery on a loop that ends right after: with providers of its own
        (same settings), closed on that loop, so no SDK client outlives it and
        none is shared with the server's loop."""
        providers = {
            name: provider for name, provider in build_providers(self.settings, self.catalogue).items()
            if name != "local"  # nothing to discover, and it would load the model
        }
        try:
            await self.refresh(providers)
        finally:
            await asyncio.gather(*(p.aclose() for p in providers.values()), return_exceptions=True)

    async def refresh(self, providers: Mapping[str, Provider] | None = None) -> None:
        """Re-discover live models (Ollama) and publish them to the router."""
        providers = self.providers if providers is None else providers
        found = []
        results = await asyncio.gather(
            *(p.discover() for p in providers.values()), return_exceptions=True
        )
        for name, result in zip(providers, results):
            if isinstance(result, BaseException):
                log.warning("model discovery failed for %s: %s", name, type(result).__name__)
                continue
            found.extend(result)
        self.router.catalogue = self.catalogue.with_models(found)

    def history_secret(self) -> str:
        """Key that encrypts saved chats in the browser.

        ``CHAT_HISTORY_SECRET`` if set; otherwise one generated once and kept in
        ``.gradio/relay-chat-history-secret`` so saved chats survive a restart.
        """
        if self.settings.history_secret is not None:
            return self.settings.history_secret.get_secret_value()
        path = Path(".gradio") / "relay-chat-history-secret"
        try:
            if path.exists():
                return path.read_text().strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            value = secrets.token_urlsafe(24)
            path.write_text(value)
            path.chmod(0o600)
            return value
        except OSError:
            return ""  # Gradio then uses a per-process random key
