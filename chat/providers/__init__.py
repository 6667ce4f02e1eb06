"""Provider adapters, one small module each, behind ``base.Provider``."""

from __future__ import annotations

from ..catalogue import Catalogue
from ..config import Settings, secret_from_env
from .base import Availability, Provider, State, guard_stream

__all__ = ["Availability", "Provider", "State", "build_providers", "guard_stream"]


def build_providers(
    settings: Settings, catalogue: Catalogue, *, kept: dict[str, object] | None = None
) -> dict[str, Provider]:
    """One provider per name used in the catalogue. Builds no SDK client yet and
    makes no network call: clients are created on first use. ``kept`` outlives
    hot reloads (the embedded model is taken over, not loaded again)."""
    providers: dict[str, Provider] = {}
    if settings.local_model_enabled:
        from .local import LocalProvider

        providers["local"] = LocalProvider(settings, kept=kept)
    from .anthropic import AnthropicProvider
    from .body import ReadPacer
    from .openai import OpenAIProvider

    reads = ReadPacer()  # every streaming body of the process shares the read budget
    providers["openai"] = OpenAIProvider(
        settings, api_key=settings.openai_api_key, base_url=settings.openai_base_url, reads=reads
    )
    providers["anthropic"] = AnthropicProvider(
        settings, api_key=settings.anthropic_api_key, base_url=settings.anthropic_base_url, reads=reads
    )
    if settings.ollama_enabled:
        from .ollama import OllamaProvider

        providers["ollama"] = OllamaProvider(settings, reads=reads)
    for spec in catalogue.providers:
        # The variable is named by the catalogue, so it cannot be a Settings
        # field; it is read here, once (environment, then the dotenv file).
        providers[spec.name] = OpenAIProvider(
            settings,
            name=spec.name,
            api_key=secret_from_env(spec.api_key_env) if spec.api_key_env else None,
            api_key_env=spec.api_key_env,
            base_url=spec.base_url,
            key_required=spec.api_key_env is not None,
            reads=reads,
        )
    return providers
