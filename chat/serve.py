"""Serving the UI and the API on one port with Gradio's own server.

The API's routes go into the FastAPI app Gradio builds at ``launch()``
(``app_kwargs={"routes": ...}``; routes added to ``demo.app`` before launch are
lost), ahead of Gradio's own. ``ssr_mode=False`` whatever ``GRADIO_SSR_MODE``
says: with SSR on, a Node proxy takes the public port and answers every path
it does not know — ``/v1/...``, ``/health`` — with the HTML page and 200.
Gradio's server is kept (rather than mounting on our own FastAPI app) so that
``share=True`` still works. The page goes behind Gradio's login when
``CHAT_UI_PASSWORD`` / ``CHAT_UI_USERS`` is set, and browsers on other sites
are refused (``chat.origins``).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from starlette.middleware import Middleware

from .access import ui_auth
from .api import Edge, build_routes
from .origins import SameOriginMiddleware
from .runtime import Runtime

__all__ = ["launch"]


def launch(demo: gr.Blocks, runtime: Runtime, *, edge: Edge | None = None, **kwargs: Any) -> None:
    """``demo.launch(**kwargs)`` with the API's routes on the same port."""
    kwargs.setdefault("max_threads", runtime.settings.max_threads)
    kwargs.setdefault("show_error", False)
    app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
    app_kwargs["routes"] = [*build_routes(runtime, edge=edge), *app_kwargs.get("routes", [])]
    app_kwargs["middleware"] = [Middleware(SameOriginMiddleware, allowed=runtime.settings.cors_origins),
                                *app_kwargs.get("middleware", [])]
    s = runtime.settings
    auth = ui_auth(s.ui_password.get_secret_value() if s.ui_password else None,
                   s.ui_users.get_secret_value() if s.ui_users else None)
    if auth is not None:
        kwargs.setdefault("auth", auth)
        kwargs.setdefault("auth_message", "Relay Chat: sign in to chat.")
    demo.launch(ssr_mode=False, app_kwargs=app_kwargs, **kwargs)
