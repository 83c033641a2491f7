"""Faults: a server that fails often, a run SIGKILLed three times and resumed, compared with a clean run.

    python benchmarks/faults.py                    # ko-KR, 600 seeds, concurrency 32 (~2 min)
    python benchmarks/faults.py --seeds 1000 --kills 3

The fake server (``benchmarks/fake_server.py``, its own process) answers 10% of requests with HTTP 500,
5% with 429, 2% hang past the client's timeout and 2% have a truncated JSON body. The pipeline runs
once uninterrupted (the reference), then again in a fresh run folder that is SIGKILLed at three random
points (chosen from the reference's call count with ``--seed``) and resumed to the end. It prints
whether the resumed run's tables and ``triplets.jsonl`` equal the reference's, and how many calls were
repeated: answers the server delivered (HTTP 200) that the run did not keep, because the process was
killed while they were in flight. ``tests/test_faults.py`` runs the same at a small size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import Server, parse_with_deadline  # noqa: E402

FAULTS = {"p500": 0.10, "p429": 0.05, "ptimeout": 0.02, "pmalformed": 0.02}

SCRIPT = r"""
import asyncio, json, sys
from coherence.config import load_config
from coherence.pipeline.runner import prepare_run, run_async
overrides = json.loads(sys.argv[2])
cfg = load_config(None, overrides)
cfg.pipeline.max_minutes = cfg.pipeline.domain_patience = None
run_dir, cfg = prepare_run(cfg, run_id=sys.argv[1])
summary = asyncio.run(run_async(cfg, run_dir))
print("STATUS", summary["status"])
"""


def overrides(url: str, *, pack: str, seeds_per_template: int, max_seeds: int | None, concurrency: int,
              timeout: float, runs_dir: Path, target_count: int) -> dict[str, Any]:
    def spec(name: str) -> dict[str, Any]:
        return {"model": f"openai/{name}", "api_base": url, "max_concurrency": concurrency, "timeout": timeout,
                "max_retries": 10, "limit_group": "server"}

    return {
        "pack": pack, "runs_dir": str(runs_dir), "roles.target": spec("target"), "roles.attacker": spec("attacker"),
        "roles.slot_filler": spec("filler"), "roles.generators": [spec("gen-1"), spec("gen-2"), spec("gen-3")],
        "roles.query_judge": spec("judge-q"), "roles.response_judge": spec("judge-r"),
        "roles.filter_judges": [spec("judge-a"), spec("judge-b"), spec("judge-c")],
        "pipeline.seeds_per_template": seeds_per_template, "pipeline.max_seeds": max_seeds,
        "pipeline.target_count": target_count, "pipeline.domain_patience": None, "pipeline.max_minutes": None,
    }


def _start(run_id: str, cfg: dict[str, Any], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, run_id, json.dumps(cfg)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})


def _calls(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    try:
        db = sqlite3.connect(db_path, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:
        return 0


def snapshot(db_path: Path) -> dict[str, Any]:
    """Every table that holds results (not the error log, which differs with the random faults)."""
    db = sqlite3.connect(db_path)
    out: dict[str, Any] = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                           for t in ("seeds", "attempts", "candidates", "verdicts", "triplets", "calls")}
    out["triplet_rows"] = sorted(db.execute("SELECT seed_id, status, reason, prompt, chosen, rejected, provenance "
                                            "FROM triplets"))
    out["seed_rows"] = sorted(db.execute("SELECT id, ord, status, stage, reason, wave FROM seeds"))
    out["attempt_rows"] = sorted(db.execute("SELECT * FROM attempts"))
    out["candidate_rows"] = sorted(db.execute("SELECT * FROM candidates"))
    out["verdict_rows"] = sorted(db.execute("SELECT seed_id, task, subject, judge, score, passed, reason, raw "
                                            "FROM verdicts"))
    out["call_keys"] = sorted(r[0] for r in db.execute("SELECT key FROM calls"))
    db.close()
    return out


def fault_run(*, pack: str = "ko-KR", seeds_per_template: int = 3, max_seeds: int | None = 300,
              concurrency: int = 32, latency: float = 0.02, timeout: float = 1.0, kills: int = 3, seed: int = 0,
              target_count: int = 10_000, faults: dict[str, float] | None = None,
              retry_after_500: float = -1, workdir: Path | None = None) -> dict[str, Any]:
    """Reference run, then a run killed ``kills`` times and resumed; returns the comparison."""
    rng = random.Random(seed)
    faults = FAULTS if faults is None else faults
    with tempfile.TemporaryDirectory() as tmp, \
            Server(latency=latency, timeout_sleep=timeout * 2, retry_after=0, retry_after_500=retry_after_500,
                   jailbreak_rate=0.5, pass_rate=0.8, fault_seed=seed, **faults) as server:
        root = Path(workdir or tmp)
        cfg = overrides(server.url, pack=pack, seeds_per_template=seeds_per_template, max_seeds=max_seeds,
                        concurrency=concurrency, timeout=timeout, runs_dir=root / "runs", target_count=target_count)
        t = time.time()
        ref = _start("reference", cfg, root)
        out, errs = ref.communicate(timeout=1800)
        if ref.returncode:
            raise RuntimeError(f"reference run failed: {errs[-3000:]}")
        ref_wall = time.time() - t
        ref_stats = server.stats()
        reference = snapshot(root / "runs" / "reference" / "run.db")
        total = reference["calls"]
        points = sorted(rng.uniform(0.1, 0.85) * total for _ in range(kills))
        server.wait_idle()
        server.reset()
        db_path = root / "runs" / "victim" / "run.db"
        killed_at = []
        t = time.time()
        for point in points:
            proc = _start("victim", cfg, root)
            while proc.poll() is None and _calls(db_path) < point:
                time.sleep(0.005)
            if proc.poll() is not None:
                raise RuntimeError(f"the run ended before the kill at {point:.0f} calls: {proc.stderr.read()[-2000:]}")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_at.append(_calls(db_path))
        final = _start("victim", cfg, root)
        out, errs = final.communicate(timeout=1800)
        if final.returncode:
            raise RuntimeError(f"resumed run failed: {errs[-3000:]}")
        victim_wall = time.time() - t
        server.wait_idle()
        stats = server.stats()
        resumed = snapshot(db_path)
        same_jsonl = (root / "runs" / "victim" / "triplets.jsonl").read_bytes() == \
            (root / "runs" / "reference" / "triplets.jsonl").read_bytes()
        answered = stats["statuses"].get("200", 0)
        return {
            "equal": resumed == reference, "same_triplets_jsonl": same_jsonl,
            "mismatched": sorted(k for k in reference if resumed.get(k) != reference[k]),
            "calls": total, "accepted": sum(1 for r in reference["triplet_rows"] if r[1] == "accepted"),
            "killed_at_calls": killed_at, "repeated": answered - resumed["calls"],
            "repeated_share": (answered - resumed["calls"]) / max(1, resumed["calls"]),
            "victim_statuses": stats["statuses"], "reference_statuses": ref_stats["statuses"],
            "reference_wall_s": ref_wall, "victim_wall_s": victim_wall,
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pack", default="ko-KR")
    p.add_argument("--seeds", type=int, default=600)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = parse_with_deadline(p, default=1800, what="benchmarks/faults.py")
    r = fault_run(pack=args.pack, seeds_per_template=-(-args.seeds // 109), max_seeds=args.seeds,
                  concurrency=args.concurrency, latency=args.latency, kills=args.kills, seed=args.seed)
    print(f"faults injected: {', '.join(f'{k} {v:.0%}' for k, v in FAULTS.items())}; "
          f"{args.kills} SIGKILLs at {r['killed_at_calls']} recorded calls, then resumed")
    print(f"reference: {r['calls']} calls, {r['accepted']} accepted, {r['reference_wall_s']:.1f} s, "
          f"server statuses {r['reference_statuses']}")
    print(f"killed+resumed: {r['victim_wall_s']:.1f} s, server statuses {r['victim_statuses']}")
    print(f"resumed == uninterrupted (every table, row for row): {r['equal']}; triplets.jsonl identical: "
          f"{r['same_triplets_jsonl']}" + (f"; differs in {r['mismatched']}" if r["mismatched"] else ""))
    print(f"repeated calls: {r['repeated']} of {r['calls']} ({r['repeated_share']:.2%}; answers lost in flight "
          f"at the kills)")
    sys.exit(0 if r["equal"] and r["same_triplets_jsonl"] and r["repeated_share"] <= 0.01 else 1)


if __name__ == "__main__":
    main()
