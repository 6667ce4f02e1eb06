"""Conversation messages and the request a provider receives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]

__all__ = ["ChatRequest", "Message", "Role"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One call to one model.

    ``model`` is the provider's own model name (the part after ``provider:``).
    ``messages`` start with any system messages (the system prompt, then a
    conversation summary), then alternate user / assistant turns, ending with a
    user turn.
    """

    model: str
    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
