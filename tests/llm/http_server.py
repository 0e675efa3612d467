"""A scripted model server on 127.0.0.1: a real HTTP endpoint that answers each request with the next
raw reply of its script (bytes, status and headers exactly as given: invalid UTF-8, absurd JSON).

The backends under test talk to it through their real HTTP clients (the anthropic SDK's, httpx2), so
whatever reaches the policy has gone through the same parsing as a reply from a real server.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union


@dataclass
class Raw:
    """One HTTP reply: a status, headers and a body of bytes (or a JSON-serialisable value)."""

    body: Union[bytes, str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8", "surrogatepass")
        return json.dumps(self.body).encode()


Reply = Union[Raw, Callable[[dict], Raw]]


class ScriptedServer:
    """Answers POSTs with its replies in order; the last reply repeats once the script is spent."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                with server._lock:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = {"unparsable": raw[:200].decode("latin-1")}
                    server.requests.append(body)
                    server.paths.append(self.path)
                    reply = server.replies.pop(0) if len(server.replies) > 1 else server.replies[0]
                out = reply(body) if callable(reply) else reply
                data = out.payload()
                self.send_response(out.status)
                headers = {"content-type": "application/json", **out.headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def count(self) -> int:
        return len(self.requests)

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Optional[BaseException]) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
