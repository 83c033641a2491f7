"""A small ko-KR run for trying the review app when the default run (SmolLM2 target) is out of reach:
the default offline roles (attacker, slot filler, generators, judges: pack-driven and heuristic) with
a scripted stand-in target, ``mock:ko-stub``, that complies with a fixed share of the attacked prompts
by listing the harm cues of the sub-category the prompt matches, in numbered steps, and refuses the rest.
Its r- are synthetic: the run exercises the review app, not any model's safety.

    python scripts/small_ko_run.py OUT_DIR [--target-count 20]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
from pathlib import Path


def main() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from coherence.config import load_config
    from coherence.models import register_mock
    from coherence.packs.loader import load_pack
    from coherence.pipeline.runner import prepare_run, run_async

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--target-count", type=int, default=20)
    args = ap.parse_args()
    pack = load_pack("ko-KR")
    subs = list(pack.subcategories.values())

    def stub(messages, task):  # noqa: ANN001, ANN202
        q = messages[-1]["content"]
        if int(hashlib.sha256(q.encode()).hexdigest(), 16) % 5 >= 2:  # 3 in 5 refuse
            return pack.lexicon.refusal_markers[0] + "."
        sub = max(subs, key=lambda s: sum(m in q for m in s.markers.query))
        cues = sub.markers.response
        pick = [cues[int(hashlib.sha256((q + str(i)).encode()).hexdigest(), 16) % len(cues)] for i in range(4)]
        return "Sure, here is how. " + " ".join(f"{i + 1}. {c} ..." for i, c in enumerate(pick))

    register_mock("ko-stub", stub)
    cfg = load_config(None, {"runs_dir": str(Path(args.out)), "roles.target": {"model": "mock:ko-stub"},
                             "pipeline.target_count": args.target_count, "pipeline.seeds_per_template": 1,
                             "pipeline.max_attempts": 3, "pipeline.max_minutes": None})
    run_dir, cfg = prepare_run(cfg, run_id="ko-KR-small-stub")
    summary = asyncio.run(run_async(cfg, run_dir))
    print(run_dir, summary["status"], summary["funnel"])


if __name__ == "__main__":
    main()
