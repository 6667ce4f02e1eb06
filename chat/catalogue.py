"""The model catalogue: which models exist, their tier, window and prices.

The catalogue is data: ``chat/models.toml`` ships with the package and
``CHAT_MODELS_FILE`` replaces it. Model ids are ``provider:model`` strings,
parsed in one place (``split_model_id``). ``auto`` is reserved for the router.
The embedded model ``local:smollm2`` is always present unless disabled.
A malformed file fails at start with a message naming the file, line and field.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "AUTO",
    "Catalogue",
    "CatalogueError",
    "LOCAL_MODEL_ID",
    "ModelSpec",
    "ProviderSpec",
    "TIERS",
    "load_catalogue",
    "split_model_id",
]

AUTO = "auto"
LOCAL_MODEL_ID = "local:smollm2"
TIERS = ("fast", "standard", "premium")
BUILTIN_PROVIDERS = ("openai", "anthropic", "ollama", "local")
DEFAULT_FILE = Path(__file__).with_name("models.toml")
Tier = Literal["fast", "standard", "premium"]


class CatalogueError(ValueError):
    """The catalogue file is malformed; the message names file, line and field."""


def split_model_id(model_id: str) -> tuple[str, str]:
    """``"ollama:llama3.2:latest"`` → ``("ollama", "llama3.2:latest")``."""
    provider, sep, name = model_id.partition(":")
    if not sep or not provider or not name:
        raise ValueError(f"model id {model_id!r} is not of the form provider:model")
    return provider, name


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    label: str
    tier: str
    context_window: int
    max_output_tokens: int | None = None
    input_cost_per_mtok: float | None = None
    output_cost_per_mtok: float | None = None

    @property
    def provider(self) -> str:
        return split_model_id(self.id)[0]

    @property
    def name(self) -> str:
        return split_model_id(self.id)[1]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """An extra OpenAI-compatible provider declared in the catalogue."""

    name: str
    base_url: str
    api_key_env: str | None = None


LOCAL_SPEC = ModelSpec(
    id=LOCAL_MODEL_ID,
    label="SmolLM2 135M (embedded)",
    tier="fast",
    context_window=8192,
    max_output_tokens=1024,
    input_cost_per_mtok=0.0,
    output_cost_per_mtok=0.0,
)


@dataclass(frozen=True, slots=True)
class Catalogue:
    models: tuple[ModelSpec, ...]
    fallback: tuple[str, ...] = ()
    providers: tuple[ProviderSpec, ...] = ()
    source: str = "<memory>"

    def get(self, model_id: str) -> ModelSpec | None:
        for spec in self.models:
            if spec.id == model_id:
                return spec
        return None

    def ids(self) -> list[str]:
        return [spec.id for spec in self.models]

    def with_window(self, model_id: str, window: int) -> Catalogue:
        """A copy where ``model_id``'s context window is at most ``window``."""
        models = tuple(
            dataclasses.replace(m, context_window=min(m.context_window, window)) if m.id == model_id else m
            for m in self.models
        )
        return Catalogue(models, self.fallback, self.providers, self.source)

    def with_models(self, extra: list[ModelSpec]) -> Catalogue:
        """A copy with ``extra`` models appended (ids already present are skipped)."""
        known = set(self.ids())
        added = tuple(m for m in extra if m.id not in known)
        return Catalogue(self.models + added, self.fallback, self.providers, self.source)


# -- file format -------------------------------------------------------------


class _ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    label: str | None = None
    tier: Tier
    context_window: int = Field(gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    input_cost_per_mtok: float | None = Field(None, ge=0)
    output_cost_per_mtok: float | None = Field(None, ge=0)

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if value == AUTO:
            raise ValueError("'auto' is reserved for the router")
        split_model_id(value)
        return value


class _ProviderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    kind: Literal["openai"] = "openai"
    base_url: str
    api_key_env: str | None = None

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value in BUILTIN_PROVIDERS:
            raise ValueError(f"{value!r} is a built-in provider name")
        return value


class _Routing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fallback: list[str] = []


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[_ModelEntry] = []
    providers: list[_ProviderEntry] = []
    routing: _Routing = _Routing()


def load_catalogue(path: Path | None = None, *, include_local: bool = True) -> Catalogue:
    """Read and validate a catalogue file (the packaged one when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read the model catalogue ({exc.strerror})") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{path}: invalid TOML: {exc}") from exc
    try:
        data = _File.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        line = _line_of(text, loc)
        field = ".".join(str(p) for p in loc)
        where = f"{path}, line {line}" if line else str(path)
        raise CatalogueError(f"{where}, field {field!r}: {first['msg']}") from exc

    provider_names = {p.name for p in data.providers}
    allowed = set(BUILTIN_PROVIDERS) | provider_names
    seen: set[str] = set()
    models: list[ModelSpec] = []
    for index, entry in enumerate(data.models):
        provider = split_model_id(entry.id)[0]
        if provider not in allowed:
            line = _line_of(text, ("models", index, "id"))
            raise CatalogueError(
                f"{path}, line {line}, field 'models.{index}.id': unknown provider "
                f"{provider!r}; use one of {', '.join(sorted(allowed))} "
                "or declare it under [[providers]]"
            )
        if entry.id in seen:
            line = _line_of(text, ("models", index, "id"))
            raise CatalogueError(f"{path}, line {line}: model {entry.id!r} is listed twice")
        seen.add(entry.id)
        models.append(
            ModelSpec(
                id=entry.id,
                label=entry.label or entry.id,
                tier=entry.tier,
                context_window=entry.context_window,
                max_output_tokens=entry.max_output_tokens,
                input_cost_per_mtok=entry.input_cost_per_mtok,
                output_cost_per_mtok=entry.output_cost_per_mtok,
            )
        )
    if include_local and LOCAL_MODEL_ID not in seen:
        models.append(LOCAL_SPEC)
    if not include_local:
        models = [m for m in models if m.provider != "local"]
    for index, model_id in enumerate(data.routing.fallback):
        try:
            split_model_id(model_id)
        except ValueError as exc:
            line = _line_of(text, ("routing", "fallback"))
            raise CatalogueError(f"{path}, line {line}, field 'routing.fallback.{index}': {exc}") from exc
    return Catalogue(
        models=tuple(models),
        fallback=tuple(data.routing.fallback),
        providers=tuple(
            ProviderSpec(p.name, p.base_url.rstrip("/"), p.api_key_env) for p in data.providers
        ),
        source=str(path),
    )


def _line_of(text: str, loc: tuple[object, ...]) -> int | None:
    """Best-effort 1-based line of ``loc`` (e.g. ``("models", 2, "tier")``) in TOML text."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    if len(loc) >= 2 and isinstance(loc[1], int):
        table, index = str(loc[0]), loc[1]
        headers = [i for i, ln in enumerate(lines) if re.match(rf"^\s*\[\[\s*{table}\s*\]\]", ln)]
        if index < len(headers):
            start = headers[index]
            end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines))
            rest = loc[2:]
        else:
            return None
    elif loc:
        table = str(loc[0])
        header = next((i for i, ln in enumerate(lines) if re.match(rf"^\s*\[\s*{table}\s*\]", ln)), None)
        if header is not None:
            start = header
            end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines))
        rest = loc[1:]
    else:
        return None
    key = next((str(p) for p in rest if isinstance(p, str)), None)
    if key:
        for i in range(start, end):
            if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i]):
                return i + 1
    return start + 1
