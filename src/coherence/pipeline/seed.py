"""Stage A: seed queries from templates, one per (sub-category, template, slot fill); near-duplicates
removed (kept in the store with their reason)."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from typing import Any

from coherence.judges.text import ngram_overlap
from coherence.packs.fill import draw_fills
from coherence.pipeline.context import RunContext, gather


def seed_id(template_id: str, fill: dict[str, str]) -> str:
    blob = json.dumps([template_id, fill], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


async def run_seed_stage(ctx: RunContext) -> None:
    """Fill every train template ``seeds_per_template`` times and store the seeds (idempotent)."""
    if ctx.store.get_meta("stage_a_done"):
        return
    pack, cfg = ctx.pack, ctx.config.pipeline
    filler = ctx.model("slot_filler")
    prompts = pack.rubrics.prompts
    jobs: list[tuple[Any, dict[str, str]]] = []
    for template in pack.reviewed_templates("train"):  # eval templates never reach training data
        rng = random.Random(f"{cfg.random_seed}:{template.id}")
        for fill in draw_fills(template.slots, pack.templates.slots, cfg.seeds_per_template, rng):
            jobs.append((template, fill))

    async def fill_one(template: Any, fill: dict[str, str]) -> str:
        hints = "\n".join(f"{k}: {v}" for k, v in fill.items())
        messages = [{"role": "user", "content": prompts.slot_filler.format(template=template.text, slots=hints)}]
        out = await filler.chat_async(messages, role="slot_filler",
                                      task={"template": template.text, "slot_fill": fill})
        ctx.advance("seed", 1)
        return out.text.strip()

    texts = await gather(*(fill_one(t, f) for t, f in jobs))
    rows: list[dict[str, Any]] = []
    kept: dict[str, list[str]] = {}
    for order, ((template, fill), text) in enumerate(zip(jobs, texts)):
        status, reason = "active", ""
        if not text:
            status, reason = "empty", "slot filler returned nothing"
        else:
            for other in kept.get(template.subcategory, []):
                sim = ngram_overlap(text, other, 3)
                if sim >= cfg.near_duplicate_threshold:
                    status, reason = "duplicate", f"near-duplicate (3-gram Jaccard {sim:.2f})"
                    break
        if status == "active":
            kept.setdefault(template.subcategory, []).append(text)
        rows.append({"id": seed_id(template.id, fill), "ord": order, "domain": pack.domain_of[template.subcategory],
                     "subcategory": template.subcategory, "template": template.id, "slot_fill": fill,
                     "text": text, "filler": filler.name, "status": status, "stage": "seed", "reason": reason})
    # interleave templates, then sub-categories, then domains, so that every wave of the attack stage
    # (and domain_patience's first seeds) covers them all, not many fills of a few templates
    tree: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    for row in rows:
        tree.setdefault(row["domain"], {}).setdefault(row["subcategory"], {}).setdefault(
            row["template"], []).append(row)
    ordered = _interleave([_interleave([_interleave(list(templates.values())) for templates in subs.values()])
                           for subs in tree.values()])
    if cfg.max_seeds is not None:
        ordered = ordered[:cfg.max_seeds]  # interleaved, so the cap keeps every domain represented
    for i, row in enumerate(ordered):
        row["ord"] = i
    ctx.store.add_seeds(ordered)
    ctx.store.set_meta("stage_a_done", True)


def _interleave(groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for group in itertools.zip_longest(*groups) for r in group if r is not None]
