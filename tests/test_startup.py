"""Starting the app: no network at import, clear failures, the README's command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from gradio_client import Client

from tests.conftest import free_port
from tests.servers import app_process

ROOT = Path(__file__).resolve().parents[1]

GUARD = r"""
import socket, sys
attempts = []
def guarded_connect(self, address, *a, **k):
    attempts.append(address)
    raise OSError("network disabled by the test")
socket.socket.connect = guarded_connect
socket.socket.connect_ex = lambda self, address: (attempts.append(address), 111)[1]
socket.create_connection = lambda address, *a, **k: guarded_connect(None, address)
sys.path.insert(0, sys.argv[1])
import app
assert app.demo is not None
import openai, anthropic
providers = app.runtime.providers
print("ATTEMPTS", attempts)
def built(p):  # an SDK client made (LoopClient holds it once built)
    clients = getattr(p, "_clients", None)
    return getattr(p, "_client", None) is not None or getattr(clients, "client", None) is not None
print("CLIENTS", [name for name, p in providers.items() if built(p)])
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ANTHROPIC_", "OLLAMA_", "CHAT_", "GRADIO_"))}
    env.update({"CHAT_ENV_FILE": "", **extra})
    return env


def test_importing_app_makes_no_network_call_and_builds_no_client(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", GUARD, str(ROOT)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=clean_env(OPENAI_API_KEY="sk-test-not-used"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ATTEMPTS []" in out.stdout, out.stdout
    assert "CLIENTS []" in out.stdout, out.stdout


def test_a_malformed_catalogue_stops_the_app_with_file_line_and_field(tmp_path):
    bad = tmp_path / "models.toml"
    bad.write_text('[[models]]\nid = "openai:x"\ntier = "fastest"\ncontext_window = 100\n')
    out = subprocess.run(
        [sys.executable, str(ROOT / "app.py")], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=clean_env(CHAT_MODELS_FILE=str(bad)),
    )
    assert out.returncode != 0
    assert f"{bad}, line 3, field 'models.0.tier'" in out.stderr
    assert "Traceback" not in out.stderr


def test_readme_run_command_serves_the_local_model_with_no_configuration(tmp_path):
    # `python app.py` from a directory with no .env, no keys, no Ollama.
    with app_process(free_port(), cwd=tmp_path, env={"OLLAMA_HOST": "http://127.0.0.1:9"}) as url:
        client = Client(url, verbose=False)
        job = client.submit("What is two plus two?", "local:smollm2", "You are helpful.", 0.2, 32,
                            api_name="/chat")
        updates = list(job)
        messages = job.result()
    answer = messages[-1]["content"]
    assert answer.strip(), messages
    assert not (messages[-1].get("metadata") or {}).get("title")
    assert len(updates) >= 2, "intermediate updates arrive before the final one"


def test_ollama_models_are_usable_through_the_api_right_after_start(tmp_path):
    """Discovery runs at start: no page load or refresh is needed, and the
    ``:latest`` tag may be left out."""
    from tests.wire import WireServer

    with WireServer() as wire, app_process(
        free_port(), cwd=tmp_path,
        env={"OLLAMA_HOST": wire.url, "CHAT_LOCAL_MODEL_ENABLED": "false"},
    ) as url:
        client = Client(url, verbose=False)
        deadline = time.monotonic() + 20
        while True:
            try:
                messages = client.predict("hello there", "ollama:llama3.2", "", 0.2, 32, api_name="/chat")
                break
            except Exception:  # discovery runs in the background right after start
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    assert messages[-1]["content"].startswith("Echo:")
    assert wire.chat_requests[-1].body["model"] == "llama3.2:latest"
