"""A run with every role remote against a fake server that refuses a deterministic share of prompts
(400 content_filter, 400 context_length_exceeded), side by side with the same run without refusals.

Prints the refusals per role slot, the seeds they stopped (with their reasons), whether every other seed
ended as in the run without refusals, and what a resume sends again (nothing) and --retry-refused sends.

    python benchmarks/refusals.py [--seeds-per-template 6] [--content-filter 0.05] [--context-length 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import parse_with_deadline  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds-per-template", type=int, default=6)
    p.add_argument("--content-filter", type=float, default=0.05)
    p.add_argument("--context-length", type=float, default=0.01)
    args = parse_with_deadline(p, default=900, what="benchmarks/refusals.py")

    from fake_openai import FakeOpenAI, refusing
    from test_refusals import ending, handler, roles, touched

    from coherence.config import load_config
    from coherence.pipeline.runner import prepare_run, run_async
    from coherence.store import Store

    def run(root: Path, url: str, **kw: object) -> tuple[dict, Path]:
        overrides = {**roles(url), "pipeline.seeds_per_template": args.seeds_per_template,
                     "pack": str(HERE.parent / "tests" / "packs" / "en-GB"), "runs_dir": str(root)}
        cfg = load_config(None, overrides)
        run_dir, cfg = prepare_run(cfg, run_id="r")
        return asyncio.run(run_async(cfg, run_dir, **kw)), run_dir  # type: ignore[arg-type]

    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        with FakeOpenAI(handler) as server:
            clean, clean_dir = run(Path(tmp) / "clean", server.url)
        shares = {"content_filter": args.content_filter, "context_length": args.context_length}
        with FakeOpenAI(refusing(handler, **shares)) as server:
            refused, run_dir = run(Path(tmp) / "refused", server.url)
            sent_400 = sum(1 for s in server.statuses if s == 400)
            requests = len(server.requests)
            again, _ = run(Path(tmp) / "refused", server.url)
            resent = len(server.requests) - requests
            retried, _ = run(Path(tmp) / "refused", server.url, retry_refused=True)
        wall = time.time() - t
        store, base = Store(run_dir / "run.db"), Store(clean_dir / "run.db")
        skip = touched(store)
        others = [s["id"] for s in base.seeds() if s["id"] not in skip]
        same = sum(ending(store, i) == ending(base, i) for i in others)
        stopped = store.seeds(status="provider_refused")
        reasons = collections.Counter(s["reason"].split(":")[0] for s in stopped)

    print(f"fake server: {args.content_filter:.0%} of prompts 400 content_filter, {args.context_length:.0%} 400 "
          f"context_length_exceeded (by prompt: a retry gets the same); every role remote; {wall:.0f} s in all")
    print(f"run without refusals: {clean['status']}, {clean['funnel']['seeds']} seeds, "
          f"{clean['funnel']['accepted']} accepted")
    print(f"run with refusals:    {refused['status']}, {requests} requests, {sent_400} refused (400), "
          f"{refused['funnel']['accepted']} accepted")
    by_slot = refused["provider_refusals"]["by_slot"]
    print("refusals per role slot: " + "; ".join(f"{k} {dict(v)}" for k, v in sorted(by_slot.items())))
    print(f"seeds stopped by a refusal: {len(stopped)} {dict(refused['funnel']['provider_refused'])}; reasons: "
          + "; ".join(f"{r} ({n})" for r, n in reasons.items()))
    print(f"seeds touched by any refusal: {len(skip)}; every other seed ended as without refusals: "
          f"{same} of {len(others)}")
    print(f"resume: {again['this_invocation']['model_calls_made']} calls made, {resent} requests reached the "
          f"server (refusals are not sent again); --retry-refused: "
          f"{retried['this_invocation']['model_calls_made']} calls made (the refusals again, and what their "
          f"reopened seeds asked next), status {retried['status']}")
    sys.exit(0 if refused["status"] == "finished" and same == len(others) and resent == 0 else 1)


if __name__ == "__main__":
    main()
