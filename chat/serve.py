"""Serving the UI and the API on one port with Gradio's own server.

The API's routes go into the FastAPI app Gradio builds at ``launch()``
(``app_kwargs={"routes": ...}``; routes added to ``demo.app`` before launch are
lost), ahead of Gradio's own. ``ssr_mode=False`` whatever ``GRADIO_SSR_MODE``
says: with SSR on, a Node proxy takes the public port and answers every path
it does not know — ``/v1/...``, ``/health`` — with the HTML page and 200.
Gradio's server is kept (rather than mounting on our own FastAPI app) so that
``share=True`` still works.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from .api import Edge, build_routes
from .runtime import Runtime

__all__ = ["launch"]


def launch(demo: gr.Blocks, runtime: Runtime, *, edge: Edge | None = None, **kwargs: Any) -> None:
    """``demo.launch(**kwargs)`` with the API's routes on the same port."""
    kwargs.setdefault("max_threads", runtime.settings.max_threads)
    kwargs.setdefault("show_error", False)
    app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
    app_kwargs["routes"] = [*build_routes(runtime, edge=edge), *app_kwargs.get("routes", [])]
    demo.launch(ssr_mode=False, app_kwargs=app_kwargs, **kwargs)
