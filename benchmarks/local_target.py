"""The local target's decoding: a static key-value cache against the dynamic one, side by side.

    python benchmarks/local_target.py                      # 64 attacked ko-KR prompts, batches of 32 (~2 min)
    python benchmarks/local_target.py --run runs/<id>      # the prompts of a run's attempts instead
    python benchmarks/local_target.py --prompts 128 --batch 32 --repeats 2

Loads ``local:smollm2`` (the default run's target) and answers the same prompts the way a run does
(``LocalChat``'s chat template, greedy, ``max_tokens`` 64, repetition penalty 1.1, batches of the target's
concurrency) once with each cache, alternating, and prints the seconds per answer of each, their ratio, and
how many answers are identical. Without ``--run`` the prompts are the eval's held-out ko-KR queries
rewritten by the offline attacker under the 5 strategies (the code-switched shape of stage B's prompts,
about 240 tokens each with SmolLM2's tokenizer).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _common import parse_with_deadline  # noqa: E402


def attacked_prompts(n: int) -> list[str]:
    from coherence.config import ModelSpec
    from coherence.evaluate.suites import safety_items
    from coherence.models import ModelPool
    from coherence.packs.loader import load_pack
    from coherence.store import Store

    pack = load_pack("ko-KR")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        pool = ModelPool(store, pack)
        try:
            items = asyncio.run(safety_items(pack, pool.get(ModelSpec(model="offline:attacker")), fills=4))
        finally:
            store.close()
    prompts = [it.prompt for it in items if it.meta.get("strategy") != "plain"]
    if len(prompts) < n:
        raise SystemExit(f"only {len(prompts)} attacked prompts in the pack's eval split; ask for --prompts {len(prompts)}")
    return prompts[:n]


def run_prompts(run: Path, n: int) -> list[str]:
    db = run / "run.db"
    if not db.is_file():
        raise SystemExit(f"{db}: no such file (fix: --run names a folder made by `coherence run`)")
    with sqlite3.connect(db) as con:
        prompts = [r[0] for r in con.execute("SELECT prompt FROM attempts ORDER BY rowid LIMIT ?", (n,))]
    if len(prompts) < n:
        raise SystemExit(f"{db}: {len(prompts)} attempts, fewer than --prompts {n}")
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="take the prompts of this run's attempts")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="the target's max_concurrency in the default run")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per cache, alternating")
    args = parse_with_deadline(parser, default=900, what="local_target benchmark")

    import torch

    from coherence.models import local

    prompts = run_prompts(args.run, args.prompts) if args.run else attacked_prompts(args.prompts)
    spec = local.ModelSpec(model="local:smollm2", max_concurrency=args.batch,
                           params={"max_tokens": args.max_tokens, "repetition_penalty": 1.1})
    chat = local.LocalChat("smollm2", spec)
    tok, model = local.load_local("smollm2", "auto")
    print(f"SmolLM2-135M-Instruct in {model.dtype}, {torch.get_num_threads()} threads, {len(prompts)} prompts, "
          f"batches of {args.batch}, {args.max_tokens} new tokens")
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    params = dict(spec.params)

    def answer(cache: str) -> tuple[float, list[str]]:
        local.CACHE_IMPLEMENTATION = cache
        started, texts = time.perf_counter(), []
        for i in range(0, len(conversations), args.batch):
            texts += [o.text for o in chat._generate_batch(conversations[i:i + args.batch], params)]
        return time.perf_counter() - started, texts

    answer("dynamic")  # warm-up (first-call allocations), not timed
    times: dict[str, list[float]] = {"dynamic": [], "static": []}
    texts: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for cache in times:
            seconds, texts[cache] = answer(cache)
            times[cache].append(seconds)
    per = {cache: min(t) / len(prompts) for cache, t in times.items()}
    same = sum(a == b for a, b in zip(texts["dynamic"], texts["static"]))
    print(f"{'cache':<8} {'s / answer':>10}")
    for cache, value in per.items():
        print(f"{cache:<8} {value:>10.3f}")
    print(f"static / dynamic time: {per['static'] / per['dynamic']:.2f}  "
          f"(speed-up {per['dynamic'] / per['static']:.2f}x); identical answers: {same} of {len(prompts)}")
    if same < len(prompts):
        print("note: the answers differ; greedy decoding should not depend on the cache layout beyond "
              "floating-point order", file=sys.stderr)


if __name__ == "__main__":
    main()
