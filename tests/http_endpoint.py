"""A real HTTP server on loopback (``http.server`` in a thread) for the HTTP sink's
tests: it records every request and can be told to fail its next calls."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Endpoint:
    """Records every request; answers the queued statuses first (``"drop"`` closes
    the connection without answering), then 200."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failures: list[int | str] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with endpoint.lock:
                    endpoint.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    status = endpoint.failures.pop(0) if endpoint.failures else 200
                if status == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                payload = b'{"error": "try later"}' if status != 200 else b"{}"
                self.send_response(int(status))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ingest"

    def bodies(self) -> list[Any]:
        return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
