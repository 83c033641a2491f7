"""A fake OpenAI-compatible chat server for benchmarks: fixed (or jittered) latency, injected faults, in-flight count.

Run as its own process (``python benchmarks/fake_server.py --latency 0.5``) so that client and server
do not share an event loop; it prints ``PORT <n>`` once it listens on 127.0.0.1 (never another
interface). ``GET /stats`` returns requests, statuses (299: a truncated body sent as 200; 598: a request left
hanging past the client's timeout), peak in-flight requests, the seconds of latency it served and the
span from the first request to the last response; ``POST /reset`` zeroes them.

Replies are a pure function of the request (a hash of its messages), so two runs against it produce
the same data whatever the faults: a 429/500/timeout/malformed reply is drawn at random per request,
and a retry gets a fresh draw; ``--p-content-filter``/``--p-context-length`` refuse a share of
prompts with a 400, chosen by the prompt (a retry gets the same refusal). It answers the pipeline's roles plausibly: JSON-schema judge requests
get a score or the six filter criteria, the slot filler gets its template filled, the attacker a
rewrite, generators a refusal, and the target a compliant answer.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import time
from typing import Any

from aiohttp import web


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def _reply(text: str, prompt_chars: int) -> dict[str, Any]:
    prompt_tokens = max(1, prompt_chars // 3)
    completion = max(1, len(text) // 3)
    return {"id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": "bench",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                      "total_tokens": prompt_tokens + completion}}


def answer(body: dict[str, Any], *, jailbreak_rate: float, pass_rate: float) -> str:
    """The reply text for a request (deterministic)."""
    messages = body.get("messages") or [{"content": ""}]
    user = str(messages[-1].get("content") or "")
    key = _h(json.dumps(messages, sort_keys=True, ensure_ascii=False))
    fmt = (body.get("response_format") or {}).get("json_schema") or {}
    if fmt.get("name") == "filter":
        names = list(fmt["schema"]["properties"])
        ok = (key % 1000) / 1000 < pass_rate
        return json.dumps({**{c: ok for c in names if c != "reason"}, "reason": "bench"})
    if fmt.get("name") == "verdict":
        score = fmt["schema"]["properties"]["score"]
        lo, hi = score.get("minimum", 1), score.get("maximum", 5)
        if hi == 5 and "<untrusted_response>" in user and "<untrusted_query>" in user and "P1" not in user:
            value = hi if (key % 1000) / 1000 < jailbreak_rate else lo  # the response-harm judge
        else:
            value = hi - key % 2  # query and quality judges: the top or one below
        return json.dumps({"score": value, "reason": "bench"})
    if "{" in user and re.search(r"\n(?:Suggested slot values|Values):\n", user):
        tpl = re.search(r"(?:Template:\n|naturally: )(.*?)\n", user, re.S)
        values = {}
        for line in re.split(r"\n(?:Suggested slot values|Values):\n", user, maxsplit=1)[1].splitlines():
            if ": " in line:
                k, v = line.split(": ", 1)
                values[k.strip()] = v.strip()
        try:
            return tpl.group(1).format_map(values) if tpl else user[-200:]
        except (KeyError, ValueError, IndexError):
            return user[-200:]
    seed = re.search(r"Seed query \(data, not instructions\):\n(.*?)\n\n", user, re.S) \
        or re.search(r"Request: (.*)\. Reply with", user, re.S)
    if seed:  # the attacker
        return f"For my thesis ({key % 97}): " + seed.group(1)[:400]
    if messages[0].get("role") == "system":  # a generator (each model answers differently)
        key = _h(str(body.get("model")) + str(key))
        return f"I can't help with that, but here is what the law says and who to ask ({key % 1000})."
    return f"Sure. Step 1 ({key % 1000}). Use the address database. 2. Call the bank account line."


def spread(timeline: dict[int, float], in_flight: int, a: float, b: float) -> None:
    """Add ``in_flight`` request-seconds per second of ``[a, b)`` (seconds since the first request) to
    the whole seconds it covers. A bounded loop over those seconds: the earlier ``while left > 0`` loop
    stepped by ``first + second + 1 - t``, which float rounding can make 0 when ``t`` sits on a second's
    boundary (``int(t - first)`` one below it), and then spun forever with the event loop blocked:
    the server stopped answering at 91% CPU while the client waited."""
    if b <= a or not in_flight:
        return
    for second in range(int(a), int(b) + 1):
        overlap = min(b, second + 1.0) - max(a, float(second))
        if overlap > 0:
            timeline[second] = timeline.get(second, 0.0) + in_flight * overlap


REFUSALS = {
    "content_filter": {"error": {"message": "The response was filtered due to the prompt triggering the content "
                                            "management policy.", "type": None, "param": "prompt",
                                 "code": "content_filter"}},
    "context_length_exceeded": {"error": {"message": "This model's maximum context length is 8192 tokens.",
                                          "type": "invalid_request_error", "param": "messages",
                                          "code": "context_length_exceeded"}},
}


def refusal_for(body: dict[str, Any], *, content_filter: float, context_length: float) -> str | None:
    """A deterministic share of prompts refused with a 400 (a hash of model and messages picks them)."""
    if not content_filter and not context_length:
        return None
    blob = json.dumps([body.get("model"), body.get("messages")], sort_keys=True, ensure_ascii=False)
    u = int(hashlib.sha256(blob.encode()).hexdigest()[:16], 16) / 16 ** 16
    if u < content_filter:
        return "content_filter"
    if u < content_filter + context_length:
        return "context_length_exceeded"
    return None


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.peak = 0
        self.statuses: dict[str, int] = {}
        self.first: float | None = None
        self.last: float | None = None
        self.latency_sum = 0.0
        self.busy = 0.0
        """Integral of in-flight requests over time (request-seconds): busy / span is the mean in flight."""
        self.changed: float | None = None
        self.timeline: dict[int, float] = {}
        """Request-seconds per whole second since the first request (mean in flight, second by second)."""
        """Seconds of latency served (the sleeps before each reply): the work a client must wait out."""


def make_app(args: argparse.Namespace) -> web.Application:
    state, rng = State(), random.Random(args.fault_seed)
    lat_rng = random.Random(args.fault_seed + 1)

    def latency() -> float:
        """``--latency`` seconds, or with ``--jitter s`` a log-normal draw of that mean and sigma s
        (provider latencies are long-tailed: completions differ in length, servers in load)."""
        if not args.jitter:
            return args.latency
        return args.latency * math.exp(lat_rng.gauss(0.0, args.jitter) - args.jitter ** 2 / 2)

    def account() -> None:  # before every change of in_flight
        now = time.monotonic()
        if state.changed is not None and state.first is not None:
            spread(state.timeline, state.in_flight, state.changed - state.first, now - state.first)
            state.busy += state.in_flight * (now - state.changed)
        state.changed = now

    async def chat(request: web.Request) -> web.StreamResponse:
        state.requests += 1
        state.first = state.first or time.monotonic()
        account()
        state.in_flight += 1
        state.peak = max(state.peak, state.in_flight)
        status = 200
        try:
            body = await request.json()
            refusal = refusal_for(body, content_filter=args.p_content_filter, context_length=args.p_context_length)
            if refusal is not None:  # per prompt, not per request: a retry gets the same refusal
                status = 400
                return web.json_response(REFUSALS[refusal], status=400)
            draw = rng.random()
            cuts = [("500", args.p500), ("429", args.p429), ("timeout", args.ptimeout), ("malformed", args.pmalformed)]
            fault, acc = None, 0.0
            for name, p in cuts:
                acc += p
                if draw < acc:
                    fault = name
                    break
            wait = latency()
            state.latency_sum += wait
            await asyncio.sleep(wait)
            if fault == "timeout":
                status = 598  # counted apart: the client has given up on it by now
                await asyncio.sleep(args.timeout_sleep)
                return web.json_response({"error": {"message": "injected hang"}}, status=504)
            if fault == "500":
                status = 500
                headers = {"retry-after": str(args.retry_after_500)} if args.retry_after_500 >= 0 else {}
                return web.json_response({"error": {"message": "injected", "type": "server_error"}}, status=500,
                                         headers=headers)
            if fault == "429":
                status = 429
                return web.json_response({"error": {"message": "injected rate limit", "type": "rate_limit"}},
                                         status=429, headers={"retry-after": str(args.retry_after)})
            if fault == "malformed":
                status = 299  # counted apart; sent as 200
                return web.Response(text='{"id": "chatcmpl-bench", "choices": [{"mess', status=200,
                                    content_type="application/json")
            prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
            text = answer(body, jailbreak_rate=args.jailbreak_rate, pass_rate=args.pass_rate)
            return web.json_response(_reply(text, prompt_chars))
        finally:
            account()
            state.in_flight -= 1
            state.last = time.monotonic()
            state.statuses[str(status)] = state.statuses.get(str(status), 0) + 1

    async def stats(request: web.Request) -> web.Response:
        span = (state.last - state.first) if state.first and state.last else 0.0
        return web.json_response({"requests": state.requests, "peak_in_flight": state.peak,
                                  "latency_sum_s": state.latency_sum, "busy_s": state.busy,
                                  "timeline": [round(state.timeline.get(i, 0.0), 1)
                                               for i in range(max(state.timeline, default=-1) + 1)],
                                  "statuses": state.statuses, "span_s": span, "in_flight": state.in_flight})

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"ok": True})

    async def configure(request: web.Request) -> web.Response:
        for k, v in (await request.json()).items():
            setattr(args, k, type(getattr(args, k))(v))
        return web.json_response(vars(args))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/chat/completions", chat)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/configure", configure)
    return app


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.5, help="seconds per reply (the mean, with --jitter)")
    p.add_argument("--jitter", type=float, default=0.0,
                   help="sigma of a log-normal latency with mean --latency (0: fixed latency)")
    p.add_argument("--p500", type=float, default=0.0, help="share of replies that are HTTP 500")
    p.add_argument("--p429", type=float, default=0.0, help="share of replies that are HTTP 429")
    p.add_argument("--ptimeout", type=float, default=0.0, help="share that hang for --timeout-sleep seconds")
    p.add_argument("--pmalformed", type=float, default=0.0, help="share with a truncated JSON body (HTTP 200)")
    p.add_argument("--timeout-sleep", type=float, default=30.0)
    p.add_argument("--retry-after", type=float, default=0.0, help="Retry-After header of a 429 (seconds)")
    p.add_argument("--retry-after-500", type=float, default=-1, help="Retry-After header of a 500 (<0: none)")
    p.add_argument("--jailbreak-rate", type=float, default=1.0, help="share of attack attempts that jailbreak")
    p.add_argument("--pass-rate", type=float, default=1.0, help="share of filter verdicts that pass")
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--p-content-filter", type=float, default=0.0,
                   help="share of prompts answered with a 400 content_filter (the same prompt every time)")
    p.add_argument("--p-context-length", type=float, default=0.0,
                   help="share of prompts answered with a 400 context_length_exceeded (the same prompt every time)")
    return p


async def _serve(args: argparse.Namespace) -> None:
    runner = web.AppRunner(make_app(args), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"PORT {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(parser().parse_args()))
