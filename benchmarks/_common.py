"""Helpers shared by the benchmarks: start the fake server process, read its stats, build configs."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch LiteLLM's price table
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

HERE = Path(__file__).parent
_SERVERS: list["Server"] = []
_DEADLINE_AT: list[float] = []


def remaining() -> float | None:
    """Seconds left before the benchmark's :func:`deadline` (None if it set none): the timeout of a
    child process it waits for."""
    return max(1.0, _DEADLINE_AT[0] - time.monotonic()) if _DEADLINE_AT else None


def parse_with_deadline(parser: "argparse.ArgumentParser", *, default: float, what: str) -> "argparse.Namespace":
    """Add ``--deadline`` (default ``default`` seconds) to a benchmark's parser, parse, and start the
    :func:`deadline` timer: every benchmark fails loudly instead of hanging."""
    parser.add_argument("--deadline", type=float, default=default,
                        help="seconds after which the benchmark stops and fails loudly (status 3) instead of hanging")
    args = parser.parse_args()
    deadline(args.deadline, what)
    return args


def deadline(seconds: float, what: str) -> threading.Timer:
    """Fail loudly if the benchmark is still running after ``seconds``: print why on stderr, stop the
    fake servers it started and exit with status 3, instead of hanging. Every benchmark calls it first."""

    def fire() -> None:
        sys.stderr.write(f"\nDEADLINE: {what} still running after {seconds:g} s: stopped (status 3). A hang is a "
                         f"bug: rerun with COHERENCE_LOG=DEBUG to see where it waits; raise --deadline only for a "
                         f"bigger run\n")
        sys.stderr.flush()
        for server in list(_SERVERS):
            server.proc.kill()
        os._exit(3)

    _DEADLINE_AT[:] = [time.monotonic() + seconds]
    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


class Server:
    """``benchmarks/fake_server.py`` in its own process (client and server never share an event loop)."""

    def __init__(self, **flags: Any) -> None:
        args = [sys.executable, str(HERE / "fake_server.py")]
        for k, v in flags.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.root = f"http://127.0.0.1:{int(line.split()[1])}"
        self.url = self.root + "/v1"
        _SERVERS.append(self)

    def _post(self, path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        req = urllib.request.Request(self.root + path, data=json.dumps(data or {}).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.root + "/stats", timeout=30) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        self._post("/reset")

    def configure(self, **flags: Any) -> None:
        self._post("/configure", flags)

    def wait_idle(self, timeout: float = 120) -> None:
        """Wait until no request is in flight (a killed client may leave some behind)."""
        end = time.time() + timeout
        while self.stats()["in_flight"] and time.time() < end:
            time.sleep(0.2)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self in _SERVERS:
            _SERVERS.remove(self)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def remote_overrides(url: str, *, seeds: int, concurrency: int, timeout: float = 120.0,
                     max_retries: int = 8, model: str = "openai/bench") -> dict[str, Any]:
    """Every role remote, each its own model name, all in one ``limit_group`` (so one concurrency
    bound of ``concurrency`` holds for the whole run, as one server's would)."""
    def spec(name: str) -> dict[str, Any]:
        return {"model": f"{model}-{name}", "api_base": url, "max_concurrency": concurrency, "timeout": timeout,
                "max_retries": max_retries, "limit_group": "bench"}

    per_template = -(-seeds // 109)
    return {
        "pack": "ko-KR", "roles.target": spec("target"), "roles.attacker": spec("attacker"),
        "roles.slot_filler": spec("filler"), "roles.generators": [spec("gen-1"), spec("gen-2"), spec("gen-3")],
        "roles.query_judge": spec("judge-q"), "roles.response_judge": spec("judge-r"),
        "roles.filter_judges": [spec("judge-a"), spec("judge-b"), spec("judge-c")],
        "pipeline.seeds_per_template": per_template, "pipeline.max_seeds": seeds,
        "pipeline.target_count": 10 * seeds, "pipeline.domain_patience": None, "pipeline.max_minutes": None,
    }


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
