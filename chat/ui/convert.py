"""Gradio's chat shapes → ours (the one place the page's history is converted)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..messages import Message

__all__ = ["content_text", "history_to_messages"]


def history_to_messages(history: Sequence[Any]) -> tuple[Message, ...]:
    """Gradio history → user/assistant turns.

    Accepts both shapes Gradio sends (browser: content as a list of parts;
    API: plain strings), drops our own notes (messages with ``metadata.title``)
    and user messages that got no answer, and joins consecutive assistant
    messages, so providers that need strict alternation (Anthropic) accept it.
    """
    out: list[Message] = []
    for item in history or ():
        if not isinstance(item, dict):
            role = getattr(item, "role", None)
            content = getattr(item, "content", None)
            metadata = getattr(item, "metadata", None)
        else:
            role, content, metadata = item.get("role"), item.get("content"), item.get("metadata")
        if role not in ("user", "assistant"):
            continue
        if isinstance(metadata, dict) and metadata.get("title"):
            continue
        text = content_text(content)
        if not text:
            continue
        if out and out[-1].role == role == "assistant":
            out[-1] = Message(role, out[-1].content + "\n\n" + text)
        elif out and out[-1].role == role == "user":
            # The earlier message got no answer (refused, or every model
            # failed before any text): it is not part of the conversation.
            out[-1] = Message(role, text)
        else:
            out.append(Message(role, text))
    return tuple(out)


def content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    if isinstance(content, (list, tuple)):
        return "".join(content_text(part) for part in content)
    return str(getattr(content, "text", "") or "")
