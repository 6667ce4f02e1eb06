"""Hot reload as the README recommends it (``gradio app.py``): the embedded model
is warmed up once, and after 5 reloads one copy of it is in memory and still
answers.

The app runs from a copy of ``app.py`` and ``chat/`` in a temporary directory
(the reloads edit that copy, never the repository).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client

from tests.conftest import ROOT, free_port
from tests.servers import wait_http

pytestmark = pytest.mark.model

RELOADS = 5
# One copy of the model with one instance is ~300 MB here; each reload keeps
# a few MB of the old page and modules (Gradio's own cost).
MAX_GROWTH_MB = 100


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def child_pid(pid: int) -> int:
    """The ``python app.py`` process the ``gradio`` command started."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise AssertionError("gradio did not start the app")


def wait_log(log: Path, pattern: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, log.read_text(errors="replace"))) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} × {pattern!r} not logged within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def test_hot_reload_keeps_one_warm_copy_of_the_model(tmp_path):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(ROOT / "app.py", app_dir / "app.py")
    shutil.copytree(ROOT / "chat", app_dir / "chat", ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "OLLAMA_"))},
        "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "CHAT_ENV_FILE": "",
        "CHAT_OLLAMA_ENABLED": "false", "CHAT_LOCAL_POOL_SIZE": "1", "CHAT_LOG_LEVEL": "INFO",
    }
    log = tmp_path / "app.log"
    gradio = Path(sys.executable).parent / "gradio"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(gradio), "app.py"], cwd=app_dir, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_http(url, 90, proc)
        app = child_pid(proc.pid)
        # Loaded and warmed up once; the reloader's first run of app.py takes it over.
        wait_log(log, r"local model loaded: .*warmed up", 1, 120)
        wait_log(log, r"local model taken over", 1, 60)
        before = rss_mb(app)

        for n in range(1, RELOADS + 1):
            # The reloader notes every file's time again after a reload: edit after that.
            time.sleep(0.5)
            with open(app_dir / "chat" / "ui" / "page.py", "a", encoding="utf-8") as source:
                source.write(f"\n# edit {n}\n")  # a developer saving a change
            wait_log(log, r"Changes detected in", n, 30)
            wait_log(log, r"local model taken over", n + 1, 30)
        after = rss_mb(app)

        text = log.read_text(errors="replace")
        assert len(re.findall(r"local model loaded", text)) == 1, "the model was loaded once"
        assert after - before < MAX_GROWTH_MB, f"RSS {before:.0f} MB → {after:.0f} MB after {RELOADS} reloads"
        # The page still answers with the model taken over.
        client = Client(url, verbose=False)
        messages = client.predict("Say hi.", "local:smollm2", "Be brief.", 0.2, 8, api_name="/chat")
        answer = [m for m in messages if not (m.get("metadata") or {}).get("title")]
        assert answer and str(answer[-1]["content"]).strip(), messages
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
