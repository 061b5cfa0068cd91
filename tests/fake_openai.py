"""A fake OpenAI-compatible endpoint for testing the endpoint clients: a tiny local HTTP server implementing
POST /v1/chat/completions. It is a fake on purpose (no model runs); `reply(request_json)` decides each answer (an
int it returns is an HTTP status that call fails with), a `status` other than 200 makes every call fail with it,
and every request is recorded (path, body, headers and the Authorization header as `auth`) so tests can check what
the client sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAIEndpoint:
    def __init__(self, reply: Callable[[dict[str, Any]], str | int], status: int = 200):
        self.reply, self.status = reply, status
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "auth": self.headers.get("Authorization"),
                        "body": body,
                    }
                )
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": "no such route"})
                elif fake.status != 200:
                    self._send(fake.status, {"error": {"message": "fake failure"}})
                else:
                    content = fake.reply(body)
                    if isinstance(content, int):
                        self._send(content, {"error": {"message": "fake failure"}})
                    else:
                        self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

            def _send(self, status: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAIEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def text_of(message: dict[str, Any]) -> str:
    """The text parts of a chat message (content is a string or a list of typed parts)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")
