"""Throughput: our pipeline vs distilabel vs a bare asyncio client, against one fake server.

    python benchmarks/throughput.py              # 0.5 s, 2 s, 0.5 s with 5% 429 + 2% 500, 0.5 s jittered (~12 min)
    python benchmarks/throughput.py --seeds 400 --latency 2 --no-faults --jitter 0 --distilabel 8x8

For each row it starts ``benchmarks/fake_server.py`` (its own process) and runs, one after another:

1. ``coherence``: the whole pipeline (stages A-D, ko-KR pack, ``--seeds`` seeds) with every role a
   remote ``openai/...`` model on the fake server's ``api_base``, all roles in one ``limit_group`` at
   ``--concurrency`` (so the whole run has one bound of 64, as one server would).
2. ``bare``: the same number of completions from a bare aiohttp client (a semaphore of
   ``--concurrency``, no dependencies between calls): the machine's ceiling.
3. ``distilabel`` (``pip install -e '.[bench]'``): the same number of completions through distilabel's
   ``OpenAILLM`` in a ``TextGeneration`` step, for each ``--distilabel`` setting ``BATCHxREPLICAS``
   (``input_batch_size`` x step replicas, at most ``--concurrency`` requests in flight); the best
   setting is compared. distilabel sends a batch concurrently and awaits all of it before the next,
   so it does best with small batches over several replica processes: at 0.5 s, 2,765 calls, we
   measured 0.66 (64x1), 0.81 (32x2), 0.88 (16x4) and 0.92 (8x8) of ideal; the default sweeps the
   two best.

The rows: fixed latency at each ``--latency`` (default 0.5 s and 2 s); the first latency with 5% 429s
(``Retry-After`` ``--retry-after``) and 2% 500s; and the first latency with a log-normal latency of
the same mean and sigma ``--jitter`` (default 0.5: real providers' latencies are long-tailed, because
completions differ in length and servers in load), which is where awaiting whole batches costs most.

Each prints the ratio of ideal time (the latency the server served, summed, / concurrency; with a
fixed latency, calls x latency / concurrency) to measured time, the server-side span from the first
request to the last response (end-to-end wall time, which adds start-up and export, is printed too),
and the server's mean and peak in-flight requests. Ratios above 1 are impossible; ours / distilabel is the
ratio of their speeds on the same number of calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import _SERVERS, Server, parse_with_deadline, remaining, remote_overrides  # noqa: E402

DISTILABEL_SCRIPT = r"""
import json, sys, time, os, logging
os.environ["DISTILABEL_LOG_LEVEL"] = "ERROR"
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts
from distilabel.steps.tasks import TextGeneration
from distilabel.models import OpenAILLM

url, n, batch, replicas = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if __name__ == "__main__":
    from distilabel.steps import StepResources
    with Pipeline(name=f"bench-{n}-{time.time()}") as pipe:
        load = LoadDataFromDicts(data=[{"instruction": f"Question {i}: say something."} for i in range(n)],
                                 batch_size=max(batch, 50))
        gen = TextGeneration(llm=OpenAILLM(model="bench", base_url=url, api_key="x", max_retries=8, timeout=120),
                             input_batch_size=batch, resources=StepResources(replicas=replicas))
        load >> gen
    t = time.time()
    ds = pipe.run(use_cache=False)
    rows = ds["default"]["train"]
    ok = sum(1 for r in rows if r.get("generation"))
    print("RESULT " + json.dumps({"rows": len(rows), "ok": ok, "wall": time.time() - t}))
"""


def run_ours(server: Server, *, seeds: int, concurrency: int, runs_dir: Path) -> dict[str, Any]:
    from coherence.config import load_config
    from coherence.pipeline.runner import prepare_run, run_async

    cfg = load_config(None, {**remote_overrides(server.url, seeds=seeds, concurrency=concurrency),
                             "runs_dir": str(runs_dir)})
    cfg.pipeline.max_minutes = cfg.pipeline.domain_patience = None
    run_dir, cfg = prepare_run(cfg, run_id=f"bench-{time.time_ns()}")
    server.reset()
    t = time.time()
    summary = asyncio.run(run_async(cfg, run_dir))
    wall = time.time() - t
    stats = server.stats()
    f = summary["funnel"]
    return {"calls": stats["requests"], "span": stats["span_s"], "wall": wall, "peak": stats["peak_in_flight"],
            "busy": stats["busy_s"], "latency_sum": stats["latency_sum_s"], "statuses": stats["statuses"], "accepted": f["accepted"], "seeds": f["seeds"], "status": summary["status"]}


async def _bare(url: str, n: int, concurrency: int) -> int:
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one(i: int) -> None:
            nonlocal done
            body = {"model": "bench", "messages": [{"role": "user", "content": f"Question {i}: say something."}]}
            async with sem:
                for attempt in range(10):
                    async with session.post(url + "/chat/completions", json=body) as r:
                        if r.status == 200:
                            try:
                                await r.json()
                                done += 1
                                return
                            except Exception:  # noqa: BLE001 - malformed body: retry
                                pass
                        else:
                            await r.read()
                    await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))

        await asyncio.gather(*(one(i) for i in range(n)))
    return done


def run_bare(server: Server, *, n: int, concurrency: int) -> dict[str, Any]:
    server.reset()
    t = time.time()
    ok = asyncio.run(_bare(server.url, n, concurrency))
    wall = time.time() - t
    stats = server.stats()
    return {"calls": stats["requests"], "span": stats["span_s"], "wall": wall, "peak": stats["peak_in_flight"],
            "busy": stats["busy_s"], "latency_sum": stats["latency_sum_s"], "statuses": stats["statuses"], "ok": ok}


def run_distilabel(server: Server, *, n: int, batch: int, replicas: int) -> dict[str, Any] | None:
    try:
        import distilabel  # noqa: F401
    except ImportError:
        print("  distilabel: not installed (pip install -e '.[bench]'); skipped")
        return None
    server.reset()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "distil.py"
        script.write_text(DISTILABEL_SCRIPT)
        t = time.time()
        try:
            out = subprocess.run([sys.executable, str(script), server.url, str(n), str(batch), str(replicas)],
                                 capture_output=True, text=True, cwd=tmp, timeout=remaining(),
                                 env={**__import__("os").environ, "DISTILABEL_CACHE_DIR": tmp})
        except subprocess.TimeoutExpired:
            sys.stderr.write("DEADLINE: the distilabel run was still going at the benchmark's deadline: stopped\n")
            for s in list(_SERVERS):
                s.proc.kill()
            raise SystemExit(3) from None
        wall = time.time() - t
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode or line is None:
        print("  distilabel failed:", out.stderr[-2000:])
        return None
    res = json.loads(line[7:])
    stats = server.stats()
    return {"calls": stats["requests"], "span": stats["span_s"], "wall": wall, "peak": stats["peak_in_flight"],
            "busy": stats["busy_s"], "latency_sum": stats["latency_sum_s"], "statuses": stats["statuses"], "ok": res["ok"], "pipeline_wall": res["wall"]}


def _line(name: str, r: dict[str, Any], concurrency: int, extra: str = "") -> float:
    ideal = r["latency_sum"] / concurrency  # = calls x latency / concurrency when the latency is fixed
    ratio = ideal / r["span"] if r["span"] else 0.0
    print(f"  {name:<11} calls {r['calls']:>6}  ideal {ideal:7.1f} s  measured {r['span']:7.1f} s  "
          f"ratio {ratio:.2f}  (end to end {r['wall']:.1f} s)  in flight: mean {r['busy'] / r['span']:4.1f}, "
          f"peak {r['peak']:>3}  "
          f"statuses {r['statuses']}{extra}")
    return ratio


def bench(latency: float, args: argparse.Namespace, *, faults: dict[str, float], jitter: float = 0.0) -> None:
    label = ", ".join([f"{k} {v:g}" for k, v in faults.items()] + ([f"log-normal jitter sigma {jitter:g}"] if jitter
                                                                   else [])) or "fixed latency, no faults"
    print(f"\nlatency {latency} s, concurrency {args.concurrency}, {args.seeds} seeds ({label})", flush=True)
    with Server(latency=latency, jitter=jitter, jailbreak_rate=args.jailbreak_rate, pass_rate=args.pass_rate,
                retry_after=args.retry_after, **faults) as server, \
            tempfile.TemporaryDirectory() as tmp:
        ours = run_ours(server, seeds=args.seeds, concurrency=args.concurrency, runs_dir=Path(tmp))
        r_ours = _line("coherence", ours, args.concurrency,
                       f"  [{ours['seeds']} seeds, {ours['accepted']} accepted, {ours['status']}]")
        n = ours["statuses"].get("200", 0)  # the same number of completions (each client has its own faults)
        bare = run_bare(server, n=n, concurrency=args.concurrency)
        r_bare = _line("bare", bare, args.concurrency)
        print(f"  coherence / bare-client ceiling: {r_ours / r_bare:.2f}", flush=True)
        best: tuple[float, str] | None = None
        for setting in args.distilabel:
            batch, replicas = (int(x) for x in setting.split("x"))
            distil = run_distilabel(server, n=n, batch=batch, replicas=replicas)
            if distil:
                r_d = _line(f"distilabel {setting}", distil, args.concurrency, f"  [{distil['ok']} completions, "
                            f"input_batch_size {batch}, {replicas} replica{'s' if replicas > 1 else ''}]")
                best = max(best or (r_d, setting), (r_d, setting))
        if best:
            print(f"  coherence / distilabel at its best here ({best[1]}): {r_ours / best[0]:.2f}x", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=200, help="seeds through the pipeline (~14 calls each)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency", type=float, action="append", help="seconds per reply (repeatable; default 0.5 and 2)")
    p.add_argument("--jitter", type=float, default=0.5,
                   help="sigma of the log-normal latency of the extra jittered row (0: no such row)")
    p.add_argument("--jailbreak-rate", type=float, default=1.0, help="share of attack attempts that jailbreak")
    p.add_argument("--pass-rate", type=float, default=1.0, help="share of filter verdicts that pass")
    p.add_argument("--retry-after", type=float, default=0.5, help="Retry-After of injected 429s")
    p.add_argument("--distilabel", nargs="*", default=["16x4", "8x8"], metavar="BATCHxREPLICAS",
                   help="distilabel settings to run, input_batch_size x replicas (each within the concurrency "
                        "bound); the best is compared. None: skip distilabel")
    p.add_argument("--no-faults", action="store_true", help="skip the run with injected 429s and 500s")
    args = parse_with_deadline(p, default=1800, what="benchmarks/throughput.py")
    for setting in args.distilabel:
        batch, replicas = (int(x) for x in setting.split("x"))
        if batch * replicas > args.concurrency:
            p.error(f"--distilabel {setting}: {batch * replicas} requests in flight exceed --concurrency "
                    f"{args.concurrency}")
    latencies = args.latency or [0.5, 2.0]
    for latency in latencies:
        bench(latency, args, faults={})
    if not args.no_faults:
        bench(latencies[0], args, faults={"p429": 0.05, "p500": 0.02})
    if args.jitter:
        bench(latencies[0], args, faults={}, jitter=args.jitter)


if __name__ == "__main__":
    main()
