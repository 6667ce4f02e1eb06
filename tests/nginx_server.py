"""Debian's real nginx for tests, running ``deploy/nginx.conf`` with the test's
ports: started on a free port in a temporary prefix, stopped by PID."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.servers import debian_binary, stop_process

__all__ = ["NginxServer", "nginx_path"]

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "deploy" / "nginx.conf"


def nginx_path() -> str:
    return debian_binary("nginx", "nginx-light", also=("/usr/sbin/nginx",))


class NginxServer:
    """``deploy/nginx.conf`` with its replica ports and listen port replaced."""

    def __init__(self, port: int, replicas: list[int], prefix: Path) -> None:
        self.port = port
        self.replicas = replicas
        self.prefix = prefix
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def config(self) -> str:
        text = CONF.read_text()
        servers = "".join(f"        server 127.0.0.1:{p} max_fails=0;\n" for p in self.replicas)
        text = re.sub(r"(        server 127\.0\.0\.1:786\d max_fails=0;\n)+", servers, text)
        text = text.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
        text = text.replace("worker_processes auto;", "worker_processes 1;\nerror_log logs/error.log warn;")
        return text.replace("http {", "http {\n    access_log off;", 1)

    def start(self) -> NginxServer:
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen(
            [nginx_path(), "-p", str(self.prefix), "-c", str(conf), "-g", f"daemon off; pid {self.prefix}/nginx.pid;"],
            stdout=subprocess.DEVNULL, stderr=open(self.prefix / "stderr.log", "wb"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited: " + (self.prefix / "stderr.log").read_text()[-500:])
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("nginx did not start")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5, signal.SIGQUIT)  # graceful: the master stops its workers
        self.proc = None

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
