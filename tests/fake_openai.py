"""A fake OpenAI-compatible chat server on 127.0.0.1 for tests and benchmarks (never the internet).

``FakeOpenAI(handler)`` serves ``POST /v1/chat/completions``; ``handler(request_json, n)`` returns
``(status, body_text_or_dict, headers)`` where ``n`` counts requests so far. ``reply(text)`` builds
an OpenAI chat completion body.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[[dict[str, Any], int], tuple[int, Any, dict[str, str]]]


def reply(text: str, *, model: str = "fake", prompt_tokens: int = 10) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": max(1, len(text) // 4),
                      "total_tokens": prompt_tokens + max(1, len(text) // 4)}}


class FakeOpenAI:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        outer = self

        class _H(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with outer.lock:
                    n = len(outer.requests)
                    outer.requests.append(body)
                status, payload, headers = outer.handler(body, n)
                with outer.lock:
                    outer.statuses.append(status)
                data = payload if isinstance(payload, str) else json.dumps(payload)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data.encode())))
                self.end_headers()
                self.wfile.write(data.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
