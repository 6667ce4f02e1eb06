"""Identity and limits on the page: the same gate as the API (``chat.access``).

A logged-in user (Gradio's ``auth=``, from ``CHAT_UI_PASSWORD`` /
``CHAT_UI_USERS``) is identified by name, anyone else by address
(``X-Forwarded-For`` only from ``CHAT_TRUSTED_PROXIES``). A refusal is an
answer in the chat — a note saying which limit and when to try again — never
an error overlay; the user's message stays in the chat above it (and is left
out of the next turn's history, as any unanswered message is).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..access import Identity, Pass, Refused, TrustedProxies
from ..runtime import Runtime

__all__ = ["REFUSED_TITLE", "admit_page", "page_identity"]

REFUSED_TITLE = "⏳ Not sent: limit reached"


def page_identity(request: gr.Request | None, proxies: TrustedProxies) -> Identity:
    if request is not None and getattr(request, "username", None):
        return Identity("user", str(request.username))
    peer = request.client.host if request is not None and request.client else None
    headers = getattr(request, "headers", None)
    forwarded = headers.getlist("x-forwarded-for") if headers is not None and hasattr(headers, "getlist") else []
    return Identity("ip", proxies.client(peer, forwarded))


async def admit_page(runtime: Runtime, request: gr.Request | None,
                     proxies: TrustedProxies) -> tuple[Identity, Pass | None, list[dict[str, Any]] | None]:
    """(identity, the pass, None) or (identity, None, the chat messages of a refusal)."""
    identity = page_identity(request, proxies)
    try:
        return identity, await runtime.gate.admit(identity), None
    except Refused as refused:
        note = {"role": "assistant", "content": refused.message,
                "metadata": {"title": REFUSED_TITLE, "status": "done"}}
        return identity, None, [note]
