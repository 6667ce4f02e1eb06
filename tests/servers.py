"""Running real processes for end-to-end tests and benches: the app (in-process
or as ``python app.py``), Debian's servers, and what is measured of them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tls_files(directory: Path) -> tuple[str, str, str]:
    """(CA certificate, server certificate chain, server key) for 127.0.0.1 and
    localhost, from a throwaway CA: serve HTTPS with the last two, trust the first
    (``SSL_CERT_FILE``) as a provider's certificate is trusted."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(str(paths[0]))
    server.cert_chain_pems[0].write_to_path(str(paths[1]))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(paths[1]), append=True)
    server.private_key_pem.write_to_path(str(paths[2]))
    return str(paths[0]), str(paths[1]), str(paths[2])


def debian_binary(name: str, package: str, *, also: tuple[str, ...] = ()) -> str:
    """The path of Debian's ``name`` (on PATH or at one of ``also``), installed
    from ``package`` with apt-get when missing and we are root."""

    def find() -> str | None:
        return shutil.which(name) or next((path for path in also if Path(path).exists()), None)

    found = find()
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env, capture_output=True)
        found = find()
    if not found:
        raise RuntimeError(f"Debian's {name} is not installed: run `apt-get install {package}` as root")
    return found


def stop_process(proc: subprocess.Popen, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop ``proc`` by PID: ``sig``, then SIGKILL if it is still there after ``timeout`` s."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB (NaN when it has none: it is gone)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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
        stop_process(proc)
        if log_path:
            log.close()  # type: ignore[union-attr]
