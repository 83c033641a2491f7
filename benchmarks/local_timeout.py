"""Local model timeouts: calls that arrive while a batch is generating wait behind it; with the timeout
around the queue (before) they time out and are generated again, with the timeout around the
generation only and late answers serving the retry (now) they do not. The model is a stand-in that
sleeps per batch (no weights), so the figures are about scheduling, not SmolLM2's speed.

    python benchmarks/local_timeout.py [--groups 4] [--per-group 8] [--batch-seconds 0.8] [--timeout 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _common import parse_with_deadline  # noqa: E402


def scenario(*, groups: int, per_group: int, seconds: float, timeout: float, before: bool) -> dict[str, float]:
    from coherence.config import ModelSpec
    from coherence.models import ModelPool
    from coherence.models.base import ModelOutput
    from coherence.models.local import LocalChat
    from coherence.store import Store

    generated = {"n": 0}

    def generate(self, conversations, params):  # one batch takes `seconds`
        generated["n"] += len(conversations)
        time.sleep(seconds)
        return [ModelOutput(text="a " + c[-1]["content"], input_tokens=1, output_tokens=1, cost=0.0)
                for c in conversations]

    LocalChat._generate_batch = generate  # type: ignore[method-assign]
    LocalChat.loaded = lambda self: True  # type: ignore[method-assign]  (no weights to load)
    LocalChat.owns_timeout = not before  # before: the choke point's clock also ran while queued
    settle = LocalChat._settle
    if before:  # before: an answer that came after its caller gave up was dropped
        LocalChat._settle = lambda self, key, fut, state: self._running.pop(key, None)  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "c.db")
            pool = ModelPool(store, None)
            spec = ModelSpec(model="local:stand-in", max_concurrency=groups * per_group, timeout=timeout,
                             max_retries=8)

            async def go() -> float:
                model = pool.get(spec)
                t = time.time()

                async def group(g: int) -> None:  # a group arrives while the one before it generates
                    await asyncio.sleep(0.1 * g)
                    await asyncio.gather(*(model.chat_async([{"role": "user", "content": f"q{g}-{i}"}],
                                                            role="target") for i in range(per_group)))

                await asyncio.gather(*(group(g) for g in range(groups)))
                await pool.aclose()
                return time.time() - t

            wall = asyncio.run(go())
            errors = store.call_totals()["errors"].get("timeout", 0)
            store.close()
    finally:
        LocalChat._settle = settle  # type: ignore[method-assign]
        LocalChat.owns_timeout = True
    return {"wall": wall, "timeouts": errors, "generated": generated["n"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--per-group", type=int, default=8)
    p.add_argument("--batch-seconds", type=float, default=0.8)
    p.add_argument("--timeout", type=float, default=1.0)
    args = parse_with_deadline(p, default=600, what="benchmarks/local_timeout.py")
    kw = {"groups": args.groups, "per_group": args.per_group, "seconds": args.batch_seconds, "timeout": args.timeout}
    calls = args.groups * args.per_group
    print(f"{args.groups} groups of {args.per_group} calls arriving 0.1 s apart (concurrency {calls}), a batch "
          f"takes {args.batch_seconds:g} s, timeout {args.timeout:g} s")
    rows = {name: scenario(**kw, before=name == "before") for name in ("before", "now")}
    for name, r in rows.items():
        print(f"  {name:<6} timeouts {r['timeouts']:>3}  conversations generated {r['generated']:>4} "
              f"(of {calls})  wall {r['wall']:.1f} s")
    b, n = rows["before"], rows["now"]
    print(f"  generations before / now: {b['generated'] / max(n['generated'], 1):.2f}x; "
          f"wall before / now: {b['wall'] / max(n['wall'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
