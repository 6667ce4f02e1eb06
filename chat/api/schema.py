"""The Chat Completions request body → one ``CompletionRequest``.

Accepted (anything else is ignored, as OpenAI-compatible servers do):
``model``, ``messages``, ``stream``, ``stream_options.include_usage``,
``temperature``, ``max_tokens`` / ``max_completion_tokens``, ``n`` (1 only),
``user``. ``null`` means "not given".

Messages: ``system`` (and OpenAI's newer name for it, ``developer``) become the
system prompt, joined in order; ``user`` and ``assistant`` are the conversation.
Content is a string or a list of text parts. Consecutive messages of one role
are joined (providers that need strict alternation accept the result); empty
assistant messages are dropped. A last ``assistant`` message is the start of a
cut answer to continue (``answer_so_far``).

Every problem raises ``ApiError(400)`` whose message names the field, what was
wrong and what is allowed. Validated by hand: the messages say exactly what to
change, and there is no model object per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..messages import Message
from .errors import ApiError

__all__ = ["CompletionRequest", "parse_completion"]

_SYSTEM_ROLES = ("system", "developer")
_ROLES = "system, user or assistant"
EXAMPLE = '{"model": "auto", "messages": [{"role": "user", "content": "Hello"}]}'


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    message: str  # the latest user message
    history: tuple[Message, ...]  # earlier user/assistant turns
    system_prompt: str | None  # None: the client sent no system message
    answer_so_far: str = ""
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    user: str | None = None


def _bad(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def parse_completion(raw: bytes, *, default_model: str) -> CompletionRequest:
    """Validate a request body; ``default_model`` stands in for a missing ``model``."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"The request body is not valid JSON ({exc}). Send a JSON object such as {EXAMPLE}.",
                   None, "invalid_json") from None
    if not isinstance(body, dict):
        raise _bad(f"The request body must be a JSON object, not {_kind(body)}. Send e.g. {EXAMPLE}.",
                   None, "invalid_json")

    model = body.get("model")
    if model is None:
        model = default_model
    elif not isinstance(model, str) or not model.strip():
        raise _bad(f"'model' must be a model id string such as \"auto\" (see GET /v1/models); got {_show(model)}.",
                   "model")
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):
        raise _bad(f"'n' must be 1 (Relay Chat returns one answer per request); got {_show(n)}. "
                   "Send several requests for several answers.", "n")
    stream = _optional_bool(body, "stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _bad(f"'stream_options' must be an object such as {{\"include_usage\": true}}; "
                       f"got {_show(options)}.", "stream_options")
        include_usage = _optional_bool(options, "include_usage", "stream_options.include_usage")
    temperature = body.get("temperature")
    if temperature is not None:
        if type(temperature) not in (int, float) or not 0 <= temperature <= 2:
            raise _bad(f"'temperature' must be a number from 0 to 2; got {_show(temperature)}.", "temperature")
        temperature = float(temperature)
    max_tokens = _max_tokens(body)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad(f"'user' must be a string; got {_show(user)}.", "user")

    system, turns = _conversation(body.get("messages"))
    answer_so_far = ""
    if turns and turns[-1].role == "assistant":
        answer_so_far = turns.pop().content
    if not turns or turns[-1].role != "user":
        raise _bad("'messages' holds no user message to answer. End with a user message "
                   "(or a user message, then the assistant's cut answer to continue it).", "messages")
    return CompletionRequest(
        model=model.strip(),
        message=turns[-1].content,
        history=tuple(turns[:-1]),
        system_prompt=system,
        answer_so_far=answer_so_far,
        stream=stream,
        include_usage=include_usage,
        temperature=temperature,
        max_tokens=max_tokens,
        user=user,
    )


def _conversation(messages: Any) -> tuple[str | None, list[Message]]:
    if messages is None:
        raise _bad(f"'messages' is missing. Send a list of messages, e.g. {EXAMPLE}.", "messages")
    if not isinstance(messages, list) or not messages:
        raise _bad(f"'messages' must be a non-empty list of messages; got {_show(messages)}.", "messages")
    system: list[str] = []
    turns: list[Message] = []
    for i, item in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"{where} must be an object with 'role' and 'content'; got {_show(item)}.", where)
        role = item.get("role")
        if role not in ("user", "assistant", *_SYSTEM_ROLES):
            if role in ("tool", "function"):
                raise _bad(f"{where}.role is {role!r}: Relay Chat does not call tools. "
                           f"Send {_ROLES} messages only.", f"{where}.role")
            raise _bad(f"{where}.role must be {_ROLES}; got {_show(role)}.", f"{where}.role")
        text = _content(item.get("content"), f"{where}.content", role)
        if role in _SYSTEM_ROLES:
            if text.strip():
                system.append(text)
            continue
        if role == "user" and not text.strip():
            raise _bad(f"{where}.content is empty. Write the user's message, or leave the message out.",
                       f"{where}.content")
        if role == "assistant" and not text:
            continue  # e.g. a tool-call turn: nothing to show the model
        if turns and turns[-1].role == role:
            turns[-1] = Message(role, turns[-1].content + "\n\n" + text)
        else:
            turns.append(Message(role, text))
    last = messages[-1].get("role")
    if last in _SYSTEM_ROLES:
        raise _bad(f"The last message is a {last} message. End with a user message to get an answer "
                   "(or with the assistant's cut answer to continue it).", f"messages[{len(messages) - 1}].role")
    if last == "assistant" and not _content(messages[-1].get("content"), "", "assistant").strip():
        raise _bad(f"The last message (messages[{len(messages) - 1}]) is an empty assistant message. Remove it to "
                   "get a new answer, or put the cut answer in it to continue that answer.",
                   f"messages[{len(messages) - 1}].content")
    return ("\n\n".join(system) or None), turns


def _content(content: Any, where: str, role: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        if role == "assistant":
            return ""
        raise _bad(f"{where} is missing. Send the text as a string or a list of text parts.", where)
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                raise _bad(f"{where}[{j}] must be a text part {{\"type\": \"text\", \"text\": \"...\"}}; "
                           f"got {_show(part)}.", f"{where}[{j}]")
            kind = part.get("type")
            if kind != "text":
                raise _bad(f"{where}[{j}] is a {_show(kind)} part: only text parts are supported "
                           "({\"type\": \"text\", \"text\": \"...\"}). Describe images or files in words.",
                           f"{where}[{j}].type")
            text = part.get("text")
            if not isinstance(text, str):
                raise _bad(f"{where}[{j}].text must be a string; got {_show(text)}.", f"{where}[{j}].text")
            parts.append(text)
        return "".join(parts)
    raise _bad(f"{where} must be a string or a list of text parts; got {_show(content)}.", where)


def _optional_bool(body: dict[str, Any], key: str, name: str | None = None) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"'{name or key}' must be true or false; got {_show(value)}.", name or key)
    return value


def _max_tokens(body: dict[str, Any]) -> int | None:
    chosen: int | None = None
    # max_completion_tokens is OpenAI's current name; it wins when both are sent.
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if type(value) is not int or value < 1:
            raise _bad(f"'{key}' must be a whole number of at least 1; got {_show(value)}.", key)
        chosen = value
    return chosen


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), "null" if value is None else "an object")


def _show(value: Any) -> str:
    """A short, safe rendering of a client's value for an error message."""
    text = orjson.dumps(value).decode() if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
