"""All configuration, resolved once and passed down.

Provider variables keep the SDKs' own names (``OPENAI_API_KEY``,
``OPENAI_BASE_URL``, ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``,
``OLLAMA_HOST``); the app's own settings use the ``CHAT_`` prefix. Values come
from the environment, then from a dotenv file (``.env`` in the working
directory unless ``CHAT_ENV_FILE`` names another; ``CHAT_ENV_FILE=`` disables it).
Keys are ``SecretStr``: they never print.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "is_file", "load_settings", "looks_like_path"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHAT_",
        extra="ignore",
        populate_by_name=True,
        # `OPENAI_API_KEY=` (as in .env.example) means "not set", not "".
        env_ignore_empty=True,
    )

    # -- providers (SDK names, no prefix) ----------------------------------
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    anthropic_api_key: SecretStr | None = Field(None, validation_alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(None, validation_alias="ANTHROPIC_BASE_URL")
    ollama_host: str = Field("http://localhost:11434", validation_alias="OLLAMA_HOST")

    # -- catalogue -----------------------------------------------------------
    models_file: Path | None = Field(
        None, validation_alias=AliasChoices("CHAT_MODELS_FILE", "models_file")
    )
    default_model: str = "auto"
    ollama_tier: str = "fast"
    ollama_context_window: int = Field(8192, gt=0)
    ollama_enabled: bool = True

    # -- embedded model ------------------------------------------------------
    local_model_enabled: bool = True
    local_model_path: Path | None = None
    local_pool_size: int = Field(2, ge=1, le=16)
    local_threads: int = Field(0, ge=0)  # 0: cores shared among the generations running now
    local_n_ctx: int = Field(0, ge=0)  # 0: the GGUF's training context
    local_warmup: bool = True
    # A 135M model loops easily; a mild penalty keeps long answers readable.
    local_repeat_penalty: float = Field(1.1, ge=1.0, le=2.0)
    # Longest answer of the embedded model, whatever the request asks (it rambles past this).
    local_max_output_tokens: int = Field(512, ge=1)

    # -- requests ------------------------------------------------------------
    system_prompt: str = "You are a helpful assistant."
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_output_tokens: int = Field(1024, ge=1)
    max_message_chars: int = Field(100_000, ge=1)
    connect_timeout: float = Field(10.0, gt=0)

    # -- router --------------------------------------------------------------
    first_token_timeout: float = Field(30.0, gt=0)
    stall_timeout: float = Field(20.0, gt=0)
    max_retries: int = Field(2, ge=0)
    retry_base_delay: float = Field(0.5, ge=0)
    retry_max_delay: float = Field(4.0, ge=0)
    cooldown_seconds: float = Field(60.0, ge=0)
    # Longest bench a provider's Retry-After can ask for (inf, a date years ahead...).
    max_cooldown: float = Field(600.0, ge=1, allow_inf_nan=False)
    fallback_depth: int = Field(4, ge=1)

    # -- context management --------------------------------------------------
    max_context_tokens: int = Field(8000, gt=0)
    summary_threshold: int = Field(6000, gt=0)
    summary_model: str = ""  # empty: the fast tier through the router
    summary_max_tokens: int = Field(400, gt=0)

    # -- UI / server ---------------------------------------------------------
    concurrency_limit: int = Field(64, ge=1)
    max_threads: int = Field(200, ge=1)
    stream_interval_ms: float = Field(40.0, ge=0)
    history_secret: SecretStr | None = None
    log_level: str = "INFO"

    # -- OpenAI-compatible API (chat/api) ------------------------------------
    # Seconds of silence after which a stream sends a ": ping" comment.
    sse_heartbeat: float = Field(15.0, gt=0)
    max_request_bytes: int = Field(4_000_000, ge=1024)
    # Seconds a /health live check of the providers is reused.
    health_ttl: float = Field(10.0, ge=0)

    # -- sharing and scaling out (identity, limits, shared state; issue #9) --
    # Comma-separated API keys, each ``key`` or ``name:key``; set: /v1/* and /metrics need one.
    api_keys: SecretStr | None = None
    # The page behind Gradio's login: one shared password (any user name) or ``alice:pw1,bob:pw2``.
    ui_password: SecretStr | None = None
    ui_users: SecretStr | None = None
    # Addresses/networks whose X-Forwarded-For is believed (e.g. "127.0.0.1,10.0.0.0/8").
    trusted_proxies: str = ""
    # Origins other than the page's own allowed to call it from a browser (CORS).
    cors_origins: str = ""
    # Per identity: the ``limits`` library's syntax, e.g. "30/minute" or "30/minute;500/day".
    rate_limit: str = ""
    max_concurrent_streams: int = Field(4, ge=0)  # 0: no cap
    daily_budget_usd: float | None = Field(None, ge=0)
    daily_token_limit: int | None = Field(None, ge=0)  # models without prices
    # Seconds a concurrency lease lives unless renewed (a dead replica's leases expire).
    stream_lease_ttl: float = Field(30.0, gt=0)
    # Seconds a resumable stream keeps generating with no client attached.
    resume_grace: float = Field(30.0, gt=0)
    # Shared state: empty = in-process (one replica); redis://[:password@]host:port/db.
    redis_url: SecretStr | None = Field(None, validation_alias="REDIS_URL")
    # Seconds a request body may take to arrive (a slow body gets 408, the server goes on).
    body_timeout: float = Field(30.0, gt=0)
    # Seconds to wait at start for Redis to accept connections before giving up.
    redis_start_wait: float = Field(10.0, ge=0)
    # -- previews, share links, response cache (issue 12) --------------------
    title: str = "Relay Chat"
    description: str = ""  # markdown shown above the chat
    # Example prompts: "first|second|third", or the path of a file with one per line.
    examples: str = ""
    # Hide the model, system prompt, temperature and max-tokens controls; every
    # answer uses the configured values, whatever a request sends.
    lock_settings: bool = False
    share: bool = False  # a public Gradio share link (ignored on Hugging Face Spaces)
    # Seconds a complete answer is replayed for the same request; 0 = off.
    response_cache_ttl: float = Field(0.0, ge=0, allow_inf_nan=False)

    @field_validator("examples")
    @classmethod
    def _examples_file_exists(cls, value: str) -> str:
        if not is_file(value) and looks_like_path(value):
            raise ValueError(
                f"CHAT_EXAMPLES names a file that does not exist: {value!r}. Give the path of a text "
                "file with one example per line, or the examples themselves separated by '|'."
            )
        return value


def is_file(value: str) -> bool:
    """Whether ``value`` names an existing file (a long list of examples is no file name)."""
    try:
        return Path(value.strip()).expanduser().is_file()
    except (OSError, ValueError):  # too long for a file name, a NUL byte...
        return False


def looks_like_path(value: str) -> bool:
    """Whether a ``CHAT_EXAMPLES`` value that is not an existing file was meant as
    one: no ``|``, no spaces, and a ``/`` or a ``.txt`` / ``.md`` ending
    ("What is 1/2 of 10?" is an example; "prompts/demo.txt" a missing file)."""
    value = value.strip()
    if not value or "|" in value or any(c.isspace() for c in value):
        return False
    return "/" in value or value.lower().endswith((".txt", ".md"))


def env_file() -> str | None:
    """The dotenv file in use: ``CHAT_ENV_FILE``, default ``.env``; empty disables it."""
    return os.environ.get("CHAT_ENV_FILE", ".env") or None


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and the dotenv file named by ``CHAT_ENV_FILE``."""
    return Settings(_env_file=env_file(), **overrides)  # type: ignore[call-arg]


def secret_from_env(name: str) -> SecretStr | None:
    """A secret whose variable name is data (a catalogue's ``api_key_env``):
    from the environment, else from the same dotenv file as the settings."""
    value = os.environ.get(name)
    if not value and (path := env_file()) and Path(path).is_file():
        from dotenv import dotenv_values

        value = dotenv_values(path).get(name)
    return SecretStr(value) if value else None
