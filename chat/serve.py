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

Where (``launch_options``): on Hugging Face Spaces (``SYSTEM=spaces``) the app
binds 0.0.0.0:7860, as a Space expects, unless ``GRADIO_SERVER_NAME`` /
``GRADIO_SERVER_PORT`` say otherwise; elsewhere Gradio's defaults
(127.0.0.1:7860, or those variables). ``CHAT_SHARE=true`` asks for a public
share link (not on Spaces, which has its own URL); when none can be made
(offline, a blocked tunnel) the app says so in the log and serves locally.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import gradio as gr

from starlette.middleware import Middleware

from .api import Edge, build_routes
from .config import Settings
from .origins import SameOriginMiddleware
from .runtime import Runtime

__all__ = ["launch", "launch_options", "on_spaces"]

log = logging.getLogger(__name__)

SPACES_HOST, SPACES_PORT = "0.0.0.0", 7860


def on_spaces(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the app runs on Hugging Face Spaces (the variable Spaces and Gradio use)."""
    return environ.get("SYSTEM") == "spaces"


def launch_options(settings: Settings, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """``launch()`` arguments for where the app runs (see the module docstring)."""
    options: dict[str, Any] = {"share": settings.share and not on_spaces(environ)}
    if on_spaces(environ):
        options["server_name"] = environ.get("GRADIO_SERVER_NAME") or SPACES_HOST
        options["server_port"] = int(environ.get("GRADIO_SERVER_PORT") or SPACES_PORT)
    return options


def launch(demo: gr.Blocks, runtime: Runtime, *, edge: Edge | None = None, **kwargs: Any) -> None:
    """``demo.launch(**kwargs)`` with the API's routes on the same port; blocks
    until the server stops unless ``prevent_thread_lock=True``."""
    settings = runtime.settings
    for name, value in launch_options(settings).items():
        kwargs.setdefault(name, value)
    if settings.share and on_spaces():
        log.info("CHAT_SHARE is ignored on Hugging Face Spaces: the Space's own URL is the link to share")
    kwargs.setdefault("max_threads", settings.max_threads)
    kwargs.setdefault("show_error", False)
    kwargs.setdefault("css", getattr(demo, "relay_css", None))
    app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
    app_kwargs["routes"] = [*build_routes(runtime, edge=edge), *app_kwargs.get("routes", [])]
    app_kwargs["middleware"] = [Middleware(SameOriginMiddleware, allowed=settings.cors_origins),
                                *app_kwargs.get("middleware", [])]
    auth = runtime.access.login
    if auth is not None:
        kwargs.setdefault("auth", auth)
        kwargs.setdefault("auth_message", f"{settings.title}: sign in to chat.")
    block = not kwargs.pop("prevent_thread_lock", False)
    demo.launch(ssr_mode=False, app_kwargs=app_kwargs, prevent_thread_lock=True, **kwargs)
    if kwargs.get("share"):
        if demo.share_url and auth is not None:
            log.warning("Share link: %s — behind the login (CHAT_UI_PASSWORD / CHAT_UI_USERS)", demo.share_url)
        elif demo.share_url:
            log.warning("Share link: %s — PUBLIC: anyone with this link can use the app (and spend on its "
                        "keys); set CHAT_UI_PASSWORD or CHAT_UI_USERS for a login", demo.share_url)
        else:
            log.warning("CHAT_SHARE=true, but no share link could be created (no network, or the tunnel "
                        "is blocked): serving locally only, at %s", demo.local_url)
    if block:
        demo.block_thread()
