"""Size: a synthetic run of many seeds; prints seeds/s and peak RSS (the goal: 100,000 seeds under 1 GB).

    python benchmarks/size.py                       # 100,000 seeds, in-process mock: models
    python benchmarks/size.py --seeds 5000 --http   # the zero-latency fake server over HTTP instead

Every role is a scripted ``mock:`` model in this process by default (the fake HTTP server at zero
latency is the bottleneck on a small machine: with ``--http`` every role is ``openai/...`` on
``benchmarks/fake_server.py``). Replies come from the fake server's ``answer()``: the target complies
on 30% of attempts, query judges pass, filter judges pass 80%. Quotas are set high so that every seed
goes through. The pack is ko-KR with numbered variants of every slot value (the real pack has 13,764
distinct fills; near-duplicate removal is set to 0.99 so that the variants count as seeds). The whole
pipeline runs (stage A with near-duplicate removal, waves, the store, the
export of triplets.jsonl and the Hugging Face dataset); peak RSS is the process's maximum resident set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import Server, parse_with_deadline, peak_rss_mb  # noqa: E402
from fake_server import answer  # noqa: E402

ROLES = ("target", "attacker", "filler", "gen-1", "gen-2", "gen-3", "judge-q", "judge-r", "judge-a", "judge-b",
         "judge-c")
SCORES = {"query_harm": (1, 4), "response_harm": (1, 5), "response_quality": (1, 5)}


def mock_reply(messages: list[dict[str, str]], task: dict[str, Any], *, jailbreak_rate: float,
               pass_rate: float) -> str:
    """The fake server's answer for the request this call would have sent."""
    body: dict[str, Any] = {"messages": messages}
    kind = task.get("judge_task")
    if kind == "filter":
        props = {c: {} for c in ("query_intent", "query_natural", "rejected_harmful", "chosen_safe",
                                 "chosen_coherent", "chosen_appropriate", "reason")}
        body["response_format"] = {"json_schema": {"name": "filter", "schema": {"properties": props}}}
    elif kind in SCORES:
        lo, hi = SCORES[kind]
        body["response_format"] = {"json_schema": {"name": "verdict", "schema": {"properties": {
            "score": {"minimum": lo, "maximum": hi}}}}}
    if "template" in task:  # the slot filler: our pack prompt, filled by the template itself
        return task["template"].format_map(task["slot_fill"])
    return answer(body, jailbreak_rate=jailbreak_rate, pass_rate=pass_rate)


def synthetic_pack(dst: Path, seeds: int) -> Path:
    """The ko-KR pack with numbered variants of every slot value, so that its templates have enough
    distinct fills (the real pack has 13,764). Returns the pack folder."""
    import shutil

    import yaml

    from coherence.packs.loader import resolve_pack_path

    folder = dst / "ko-KR"
    shutil.copytree(resolve_pack_path("ko-KR"), folder)
    path = folder / "templates.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    variants = max(1, -(-seeds // 5_000))
    data["slots"] = {k: [f"{v} {i}" if i else v for v in vals for i in range(variants)]
                     for k, vals in data["slots"].items()}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return folder


def config(seeds: int, runs_dir: Path, url: str | None, pack: Path) -> dict[str, Any]:
    def spec(name: str) -> dict[str, Any]:
        if url:
            return {"model": f"openai/{name}", "api_base": url, "max_concurrency": 64}
        return {"model": f"mock:size-{name}", "max_concurrency": 64}

    return {
        "pack": str(pack), "runs_dir": str(runs_dir), "roles.target": spec("target"), "roles.attacker": spec("attacker"),
        "roles.slot_filler": spec("filler"), "roles.generators": [spec("gen-1"), spec("gen-2"), spec("gen-3")],
        "roles.query_judge": spec("judge-q"), "roles.response_judge": spec("judge-r"),
        "roles.filter_judges": [spec("judge-a"), spec("judge-b"), spec("judge-c")],
        "pipeline.seeds_per_template": -(-seeds * 3 // 109), "pipeline.max_seeds": seeds,
        "pipeline.target_count": 10 * seeds, "pipeline.domain_patience": None, "pipeline.max_minutes": None,
        "pipeline.max_attempts": 3,
        "pipeline.near_duplicate_threshold": 0.99,  # numbered variants are near-duplicates by design
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=100_000)
    p.add_argument("--http", action="store_true", help="roles on the zero-latency fake server, not mock:")
    p.add_argument("--jailbreak-rate", type=float, default=0.3)
    p.add_argument("--keep", type=Path, help="keep the run folder here")
    args = parse_with_deadline(p, default=3600, what="benchmarks/size.py")

    from coherence.config import load_config
    from coherence.models import register_mock
    from coherence.pipeline.runner import prepare_run, run_async

    for name in ROLES:
        register_mock(f"size-{name}", lambda m, t: mock_reply(m, t, jailbreak_rate=args.jailbreak_rate, pass_rate=0.8))
    server = Server(latency=0.0, jailbreak_rate=args.jailbreak_rate, pass_rate=0.8) if args.http else None
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.keep or Path(tmp)
        pack = synthetic_pack(Path(tmp), args.seeds)
        cfg = load_config(None, config(args.seeds, runs, server.url if server else None, pack))
        cfg.pipeline.max_minutes = cfg.pipeline.domain_patience = None
        run_dir, cfg = prepare_run(cfg, run_id=f"size-{args.seeds}")
        marks: dict[str, float] = {}

        def advance(stage: str, n: int) -> None:  # peak RSS before the export
            marks["before_export"] = peak_rss_mb()

        t = time.time()
        summary = asyncio.run(run_async(cfg, run_dir, advance=advance))
        wall = time.time() - t
        f = summary["funnel"]
        inv = summary["this_invocation"]
        size = (run_dir / "run.db").stat().st_size / 2**20
    if server:
        server.close()
    print(json.dumps({"funnel": f, "status": summary["status"]}))
    print(f"{f['seeds']:,} seeds ({f['attacked']:,} attacked, {f['attempts']:,} attempts, {f['accepted']:,} accepted) "
          f"in {wall:.0f} s: {f['seeds'] / wall:.0f} seeds/s, {inv['model_calls_made'] / wall:.0f} calls/s "
          f"({inv['model_calls_made']:,} calls, {'fake HTTP server' if server else 'in-process mock:'}); "
          f"run.db {size:.0f} MiB; peak RSS {peak_rss_mb():.0f} MB (before the export "
          f"{marks.get('before_export', 0):.0f} MB)")


if __name__ == "__main__":
    main()
