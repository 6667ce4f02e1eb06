"""Provider adapters, one small module each, behind ``base.Provider``."""

from __future__ import annotations

from ..catalogue import Catalogue
from ..config import Settings
from .base import Availability, Provider, State, guard_stream

__all__ = ["Availability", "Provider", "State", "build_providers", "guard_stream"]


def build_providers(settings: Settings, catalogue: Catalogue) -> dict[str, Provider]:
    """One provider per name used in the catalogue. Builds no SDK client yet and
    makes no network call: clients are created on first use."""
    providers: dict[str, Provider] = {}
    if settings.local_model_enabled:
        from .local import LocalProvider

        providers["local"] = LocalProvider(settings)
    # Cloud / Ollama / OpenAI-compatible adapters are registered here (see the
    # providers issue).
    return providers
