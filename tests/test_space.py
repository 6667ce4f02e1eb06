"""Hugging Face Spaces and share links: the Space's metadata, its requirements
in step with pyproject.toml, where the app binds, a share link offline, saved
chats across a restart, and — slow, ``-m space`` — a fresh venv built from
``requirements.txt`` alone running ``python app.py`` as a Space does."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import gradio
import httpx
import pytest
import yaml
from gradio_client import Client
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from chat.serve import launch_options
from tests.conftest import free_port, send
from tests.e2e_support import answer_of, notes_of, requests_for, tag, wire_env, write_catalogue
from tests.servers import ROOT, app_process, stop_process, wait_http
from tests.wire import WireServer

COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def front_matter() -> tuple[dict, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "README.md starts with the Space's front matter"
    return yaml.safe_load(match.group(1)), text[match.end():]


def test_the_readme_is_a_valid_space_card_that_still_reads_as_a_readme():
    meta, body = front_matter()
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == gradio.__version__, "the Gradio version the suite runs"
    assert (ROOT / meta["app_file"]).is_file() and meta["app_file"] == "app.py"
    assert meta["python_version"] == "3.11", "a string (3.10 would read as the float 3.1)"
    assert meta["title"] and meta["emoji"] and meta["colorFrom"] in COLORS and meta["colorTo"] in COLORS
    assert 0 < len(meta["short_description"]) <= 60
    assert body.lstrip().startswith("# Relay Chat")
    for section in ("### Hugging Face Spaces", "### Share links", "CHAT_HISTORY_SECRET"):
        assert section in body
    assert "share link without a login is public" in body


def requirements() -> dict[str, Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    reqs = [Requirement(line) for line in (raw.split("#")[0].strip() for raw in lines) if line]
    return {canonicalize_name(r.name): r for r in reqs}


def test_requirements_txt_is_in_step_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    pinned = requirements()
    assert set(pinned) == set(declared), "the same runtime dependencies, no more, no less"
    for name, requirement in pinned.items():
        versions = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        assert len(versions) == 1, f"{name} is pinned to the tested version"
        assert declared[name].specifier.contains(versions[0]), f"{name}=={versions[0]} is outside pyproject's range"
    assert str(pinned["gradio"].specifier) == f"=={front_matter()[0]['sdk_version']}"


def test_on_spaces_the_app_binds_all_interfaces_on_7860(settings_factory):
    settings = settings_factory(share=True)
    spaces = {"SYSTEM": "spaces", "SPACE_ID": "acme/relay-chat"}
    assert launch_options(settings, spaces) == {"share": False, "server_name": "0.0.0.0", "server_port": 7860}
    assert launch_options(settings, {**spaces, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": "9000"}) == {
        "share": False, "server_name": "127.0.0.1", "server_port": 9000}
    assert launch_options(settings, {}) == {"share": True}  # elsewhere Gradio's own defaults
    assert launch_options(settings_factory(), {}) == {"share": False}


def test_a_share_link_offline_warns_and_serves_locally(tmp_path: Path):
    log = tmp_path / "app.log"
    # A proxy that refuses: the tunnel binary cannot be fetched, as offline.
    env = {"CHAT_SHARE": "true", "CHAT_LOCAL_MODEL_ENABLED": "false", "CHAT_OLLAMA_ENABLED": "false",
           "HTTPS_PROXY": f"http://127.0.0.1:{free_port()}", "HTTP_PROXY": f"http://127.0.0.1:{free_port()}"}
    with app_process(free_port(), env=env, cwd=tmp_path, log_path=log) as url:
        assert httpx.get(url, timeout=10).status_code == 200
        assert httpx.get(url + "health?live=1", timeout=10).status_code == 200
        deadline = time.monotonic() + 20
        while "no share link could be created" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    text = log.read_text()
    assert "CHAT_SHARE=true, but no share link could be created" in text and "serving locally only" in text
    assert "gradio.live" not in text


# What the page keeps in the browser's localStorage (the saved chats, encrypted).
STORED_CHATS = "() => JSON.stringify(Object.entries(localStorage).filter(([k]) => k.startsWith('_saved_conversations')))"


@pytest.mark.browser
def test_saved_chats_survive_a_restart_with_chat_history_secret(browser, tmp_path: Path, artifacts_dir):
    """A Space restarts with a fresh disk: only CHAT_HISTORY_SECRET keeps the key
    of the chats saved in the browser. Same port (the browser's storage is per
    origin), a new working directory each time."""
    port = free_port()
    spaces = {"SYSTEM": "spaces", "SPACE_ID": "acme/relay-chat", "CHAT_LOCAL_MODEL_ENABLED": "false",
              "CHAT_OLLAMA_ENABLED": "false"}
    question = f"Remember this chat {tag()}"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    def serve(directory: str, **env: str):
        cwd = tmp_path / directory
        cwd.mkdir()
        return app_process(port, env={**spaces, **env}, cwd=cwd, log_path=cwd / "app.log")

    secret = {"CHAT_HISTORY_SECRET": "a-fixed-secret-for-this-space"}
    with WireServer() as wire:
        cloud = wire_env(wire, write_catalogue(tmp_path), "sk-test-restart")
        with serve("first", **cloud, **secret) as url:
            page.goto(url, wait_until="load")
            box = page.locator("textarea").first
            box.wait_for(timeout=30_000)
            stored = page.evaluate(STORED_CHATS)
            send(page, box, question)
            page.locator('[data-testid="stop-button"]').wait_for(state="detached", timeout=30_000)
            page.get_by_text(question[:30]).nth(1).wait_for(timeout=10_000)  # listed in the saved chats
            # ... and in the browser's storage: the list can show it before the
            # browser has written it, and the app stops right after.
            page.wait_for_function(f"before => ({STORED_CHATS})() !== before", arg=stored, timeout=10_000)
        with serve("restarted", **cloud, **secret) as url:
            page.goto(url, wait_until="load")
            page.locator("textarea").first.wait_for(timeout=30_000)
            saved = page.get_by_text(question[:30]).first
            saved.wait_for(timeout=10_000)
            saved.click()
            page.locator('[data-testid="user"]').first.wait_for(timeout=10_000)
            assert question in page.locator('[data-testid="user"]').first.inner_text()
            page.screenshot(path=str(artifacts_dir / "space-restart-saved-chat.png"), full_page=True)
        with serve("no-secret", **cloud) as url:  # the control: a new random key cannot open them
            page.goto(url, wait_until="load")
            page.locator("textarea").first.wait_for(timeout=30_000)
            time.sleep(2)
            assert page.get_by_text(question[:30]).count() == 0
    context.close()


# -- the Space itself, from a fresh venv ---------------------------------------------------


def space_copy(destination: Path) -> Path:
    """The repository as a Space receives it: its files (tracked and new), not ignored ones."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.mark.space
@pytest.mark.timeout(1200)
def test_a_fresh_venv_from_requirements_runs_the_app_as_a_space(tmp_path: Path, artifacts_dir):
    """Slow (about 1–2 minutes from pip's cache): builds a venv from
    requirements.txt alone — no ``pip install -e .`` — and runs ``python app.py``
    in a copy of the repository with the variables Spaces sets, SSR on, keys as
    secrets (environment variables); then chats through the page's route, the
    API and with the embedded model."""
    space = space_copy(tmp_path / "space")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", "requirements.txt"],
        cwd=space, capture_output=True, text=True, timeout=1000,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
    )
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run([str(python), "-c", "import chat, gradio; print(gradio.__version__, chat.__file__)"],
                           cwd=space, capture_output=True, text=True, timeout=120)
    assert check.stdout.split()[0] == gradio.__version__ and str(space) in check.stdout, check.stdout + check.stderr

    port = free_port()
    log = artifacts_dir / "space-app.log"
    with WireServer() as wire:
        env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("CHAT_", "OPENAI_", "ANTHROPIC_", "OLLAMA_", "PYTHON", "VIRTUAL_ENV"))},
            **wire_env(wire, write_catalogue(tmp_path), "sk-space-secret-value"),
            "SYSTEM": "spaces", "SPACE_ID": "acme/relay-chat", "SPACE_AUTHOR_NAME": "acme",
            "SPACE_REPO_NAME": "relay-chat", "GRADIO_SSR_MODE": "True",
            "CHAT_HISTORY_SECRET": "space-history-secret", "CHAT_OLLAMA_ENABLED": "false", "CHAT_ENV_FILE": "",
            # The machine's rule: test servers listen on 127.0.0.1 only (a Space would bind 0.0.0.0:7860,
            # see test_on_spaces_the_app_binds_all_interfaces_on_7860).
            "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
        }
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(python), "app.py"], cwd=space, env=env, stdout=out, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}/"
            try:
                wait_http(url, 120, proc)
                page = httpx.get(url, timeout=10)
                assert page.status_code == 200 and "<html" in page.text.lower()
                health = httpx.get(url + "health?live=1", timeout=10)
                assert health.headers["content-type"].startswith("application/json"), "SSR's proxy is not in front"
                models = {m["id"]: m for m in httpx.get(url + "v1/models", timeout=10).json()["data"]}
                assert models["openai:wire-gpt"]["state"] == "ready", "the key came from the Space's secrets"

                marker = tag()
                messages = Client(url, verbose=False).predict(
                    f"hello {marker}", "openai:wire-gpt", "Be brief.", 0.5, 64, api_name="/chat")
                assert answer_of(messages) == f"Echo: hello {marker}" and len(requests_for(wire, marker)) == 1
                assert "sk-space-secret-value" not in httpx.get(url + "config", timeout=10).text

                deadline = time.monotonic() + 120
                while models.get("local:smollm2", {}).get("state") != "ready" and time.monotonic() < deadline:
                    time.sleep(1)
                    models = {m["id"]: m for m in httpx.get(url + "v1/models", timeout=10).json()["data"]}
                local = Client(url, verbose=False).predict("Say hi.", "local:smollm2", "Be brief.", 0.5, 32,
                                                           api_name="/chat")
                assert answer_of(local).strip(), "the embedded model answered on the Space"
                assert any("offline demo model" in title for title, _ in notes_of(local))
            finally:
                stop_process(proc)
    assert "sk-space-secret-value" not in log.read_text(errors="replace")
