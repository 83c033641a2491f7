"""Slot filling shared by stage A and the eval export: distinct fills, drawn reproducibly."""

from __future__ import annotations

import itertools
import math
import json
import random
from pathlib import Path
from typing import Any

from coherence.packs.loader import Pack


def fill_space(slots: list[str], values: dict[str, list[str]]) -> int:
    """How many distinct fills a template's slots have (the product of their value counts)."""
    return math.prod(len(values[n]) for n in set(slots))


def draw_fills(slots: list[str], values: dict[str, list[str]], k: int, rng: random.Random) -> list[dict[str, str]]:
    """Up to ``k`` distinct slot fills, drawn without replacement from the slot-value product."""
    names = sorted(set(slots))
    if not names:
        return [{}]
    space = fill_space(names, values)
    if space <= 4 * k:
        combos = list(itertools.product(*(values[n] for n in names)))
        rng.shuffle(combos)
        return [dict(zip(names, c)) for c in combos[:k]]
    seen: set[tuple[str, ...]] = set()
    fills = []
    while len(fills) < k:
        combo = tuple(rng.choice(values[n]) for n in names)
        if combo not in seen:
            seen.add(combo)
            fills.append(dict(zip(names, combo)))
    return fills


def export_eval(pack: Pack, out_dir: Path, *, fills_per_template: int = 3, seed: int = 0) -> dict[str, Any]:
    """Write the held-out eval split (filled) and the benign probes as JSONL for evaluation.

    Eval templates never reach training data (stage A reads only ``split: train``).

    Returns:
        Paths and row counts.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = out_dir / "eval_prompts.jsonl"
    n_prompts = 0
    with prompts.open("w", encoding="utf-8") as fh:
        for tpl in pack.reviewed_templates("eval"):
            rng = random.Random(f"eval:{seed}:{tpl.id}")
            for i, fill in enumerate(draw_fills(tpl.slots, pack.templates.slots, fills_per_template, rng)):
                fh.write(json.dumps({
                    "id": f"{tpl.id}#{i}", "pack": pack.ref, "domain": pack.domain_of[tpl.subcategory],
                    "subcategory": tpl.subcategory, "template": tpl.id, "slot_fill": fill,
                    "prompt": tpl.text.format_map(fill),
                    "gloss": pack.gloss(tpl, fill)}, ensure_ascii=False) + "\n")
                n_prompts += 1
    probes = out_dir / "benign_probes.jsonl"
    with probes.open("w", encoding="utf-8") as fh:
        for p in pack.probes.probes:
            fh.write(json.dumps({"id": p.id, "pack": pack.ref, "domain": p.domain, "subcategory": p.subcategory,
                                 "framed": p.text, "unframed": p.unframed}, ensure_ascii=False) + "\n")
    return {"eval_prompts": str(prompts), "eval_rows": n_prompts, "benign_probes": str(probes),
            "probe_rows": len(pack.probes.probes)}
