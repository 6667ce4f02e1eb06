"""Relay Chat entry point.

``python app.py`` serves the UI (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``
as Gradio reads them; default http://127.0.0.1:7860). ``gradio app.py`` (hot
reload) and Hugging Face Spaces use the module-level ``demo``.
Importing this module makes no network call and builds no SDK client.

Hot reload runs this file again on every change, with fresh ``chat`` modules
and ``gr.NO_RELOAD`` off: everything is rebuilt from the new code except what
is kept under the ``NO_RELOAD`` guard, the loaded embedded model, which the new
runtime takes over (warm, one copy) instead of loading another.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import sys

# Gradio's version check and telemetry otherwise reach for the network at start.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's queue recomputes its monitoring summary (a pandas table of up to
# 10,000 recorded events, in a worker thread) after every event of every
# user: every 1,000 events, over the last 1,000, is plenty.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
# Gradio imports matplotlib around every event it runs, twice; when it is not
# installed, each try searches sys.path anew. Recorded as missing once.
if importlib.util.find_spec("matplotlib") is None:
    sys.modules["matplotlib"] = None  # type: ignore[assignment]

import gradio as gr  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from chat.catalogue import CatalogueError  # noqa: E402
from chat.config import load_settings  # noqa: E402
from chat.runtime import Runtime  # noqa: E402
from chat.serve import launch  # noqa: E402
from chat.store import StoreConfigError  # noqa: E402
from chat.ui import build_demo  # noqa: E402

if gr.NO_RELOAD:
    # Survives hot reloads: the embedded model, handed from runtime to runtime.
    kept: dict[str, object] = {}

try:
    settings = load_settings()
    runtime = Runtime.build(settings, kept=kept)
except (ValidationError, CatalogueError, StoreConfigError, ValueError) as exc:
    raise SystemExit(f"Relay Chat cannot start: {exc}") from None
demo = build_demo(runtime)

def main() -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        # httpx (and httpx2, the openai SDK's client) logs every request at INFO: one
        # line per upstream call, formatted on the hot path. Kept for CHAT_LOG_LEVEL=debug.
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        runtime.store.check_at_start()  # a wrong REDIS_URL stops here, with the URL (no password) named
    except StoreConfigError as exc:
        raise SystemExit(f"Relay Chat cannot start: {exc}") from None
    runtime.start()
    # Everything loaded so far (Gradio, the SDKs, the UI) lives as long as the
    # process: keep it out of the cyclic GC, whose full passes over it stalled
    # every stream for 100–300 ms under load.
    gc.freeze()
    launch(demo, runtime)  # the UI, and the OpenAI-compatible API on the same port


if __name__ == "__main__":
    main()
