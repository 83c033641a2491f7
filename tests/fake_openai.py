"""A fake OpenAI-compatible chat server on 127.0.0.1 for tests and benchmarks (never the internet).

``FakeOpenAI(handler)`` serves ``POST /v1/chat/completions``; ``handler(request_json, n)`` returns
``(status, body_text_or_dict, headers)`` where ``n`` counts requests so far. ``reply(text)`` builds
an OpenAI chat completion body.
"""

from __future__ import annotations

import hashlib
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


def refusal_for(body: dict[str, Any], *, content_filter: float = 0.05, context_length: float = 0.01) -> str | None:
    """Deterministic refusals: a fixed ``content_filter`` share of prompts gets a 400 content_filter and a
    ``context_length`` share a 400 context_length_exceeded, chosen by a hash of the messages (the same
    prompt gets the same refusal on every retry and in every run)."""
    blob = json.dumps([body.get("model"), body.get("messages")], sort_keys=True, ensure_ascii=False)
    u = int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "big") / 2 ** 64
    if u < content_filter:
        return "content_filter"
    if u < content_filter + context_length:
        return "context_length_exceeded"
    return None


REFUSAL_BODIES = {
    "content_filter": {"error": {"message": "The response was filtered due to the prompt triggering Azure "
                                            "OpenAI's content management policy.", "type": None,
                                 "param": "prompt", "code": "content_filter", "status": 400}},
    "context_length_exceeded": {"error": {"message": "This model's maximum context length is 8192 tokens. However, "
                                                     "your messages resulted in 9001 tokens.",
                                          "type": "invalid_request_error", "param": "messages",
                                          "code": "context_length_exceeded"}},
}


def refusing(handler: Handler, **shares: float) -> Handler:
    """Wrap a handler: prompts chosen by :func:`refusal_for` get their 400, the rest go to ``handler``."""

    def wrapped(body: dict[str, Any], n: int) -> tuple[int, Any, dict[str, str]]:
        kind = refusal_for(body, **shares)
        if kind is not None:
            return 400, REFUSAL_BODIES[kind], {}
        return handler(body, n)

    return wrapped


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
