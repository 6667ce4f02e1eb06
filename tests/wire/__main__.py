"""``python -m tests.wire``: run wire servers until interrupted (see the package docstring)."""

from __future__ import annotations

import argparse
import signal
import threading

from .server import WireServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.wire", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, action="append", default=[],
                        help="a port serving all three protocols (repeatable)")
    parser.add_argument("--openai-port", type=int)
    parser.add_argument("--anthropic-port", type=int)
    parser.add_argument("--ollama-port", type=int)
    parser.add_argument("--ollama-models", default="llama3.2:latest,qwen2.5:0.5b",
                        help="comma-separated names listed by /api/tags")
    parser.add_argument("--keep-alive", action="store_true",
                        help="serve several requests per connection, as real providers do")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS with this certificate and key")
    args = parser.parse_args(argv)

    ports = list(args.port) + [p for p in (args.openai_port, args.anthropic_port, args.ollama_port) if p]
    models = [m for m in args.ollama_models.split(",") if m]
    servers = [WireServer(host=args.host, port=port, ollama_models=models, keep_alive=args.keep_alive,
                          tls=tuple(args.tls) if args.tls else None).start() for port in ports or [0]]
    for server in servers:
        print(f"wire server listening on {server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
