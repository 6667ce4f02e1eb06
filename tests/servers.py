"""Running the real app for end-to-end tests: in-process or as ``python app.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def wait_http(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def in_process(runtime, port: int) -> Iterator[str]:
    """Serve ``build_demo(runtime)`` on 127.0.0.1:port inside this process."""
    from chat.ui import build_demo

    demo = build_demo(runtime)
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
        max_threads=runtime.settings.max_threads,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url, 30)
        yield url
    finally:
        demo.close()


@contextmanager
def app_process(port: int, env: Mapping[str, str] | None = None, cwd: Path | None = None,
                log_path: Path | None = None) -> Iterator[str]:
    """Start ``python app.py`` as the README says, on 127.0.0.1:port."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "OLLAMA_"))}
    full_env.update({"GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "CHAT_ENV_FILE": ""})
    full_env.update(env or {})
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py")], cwd=cwd or ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url, 90, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_path:
            log.close()  # type: ignore[union-attr]
