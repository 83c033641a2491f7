"""Slot filling shared by stage A and the eval export: distinct fills, drawn reproducibly."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from coherence.packs.loader import Pack
from coherence.packs.schema import SLOT_RE

def particle_for(word: str, particle: str, language: str) -> str:
    """The form of ``particle`` (either allomorph, or tossi's notation with the optional part in
    brackets) that follows ``word``. Korean goes through ``tossi``, which reads digits and ignores
    bracketed text; a word it cannot read (Latin letters) comes back in tossi's both-forms notation,
    which the render test rejects (give the value a ``readings`` entry). Other languages: unchanged."""
    if language != "ko":
        return particle
    import tossi

    return tossi.pick(word, particle.replace("(", "").replace(")", "") if particle.startswith("(") else particle)


@lru_cache(maxsize=64)
def _particle_re(particles: tuple[str, ...]) -> re.Pattern[str] | None:
    if not particles:
        return None
    alts = "|".join(re.escape(p) for p in sorted(particles, key=len, reverse=True))
    return re.compile(r"\{([a-z_][a-z0-9_]*)\}(" + alts + r")(?!\w)")


def render(text: str, fill: dict[str, str], language: str, *, readings: dict[str, str] | None = None,
           particles: list[str] | tuple[str, ...] = ()) -> str:
    """Fill ``text``'s ``{slot}``s from ``fill``, resolving the particle right after each slot.

    Args:
        text: a template text with ``{slot}`` placeholders.
        fill: slot name -> value.
        language: the pack language (particles are resolved for ``ko``).
        readings: value -> how it is read aloud, where its spelling cannot tell (the pack's
            ``templates.readings``).
        particles: the pack's ``templates.particles``: forms that depend on the word before them; one
            written right after a slot (and ending a word) takes the form the filled value needs.

    Returns:
        The filled text.
    """
    pattern = _particle_re(tuple(particles)) if language == "ko" else None
    if pattern is not None:
        def one(m: re.Match[str]) -> str:
            value = fill[m.group(1)]
            return value + particle_for((readings or {}).get(value, value), m.group(2), language)

        text = pattern.sub(one, text)
    return SLOT_RE.sub(lambda m: fill[m.group(1)], text)


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


def eval_rows(pack: Pack, *, fills_per_template: int, seed: int = 0) -> list[dict[str, Any]]:
    """The held-out eval templates filled (``split: eval``; stage A reads only ``split: train``), particles
    resolved, with their English glosses: what ``pack export-eval`` writes and ``coherence eval`` asks."""
    rows = []
    for tpl in pack.reviewed_templates("eval"):
        rng = random.Random(f"eval:{seed}:{tpl.id}")
        for i, fill in enumerate(draw_fills(tpl.slots, pack.templates.slots, fills_per_template, rng)):
            rows.append({"id": f"{tpl.id}#{i}", "pack": pack.ref, "domain": pack.domain_of[tpl.subcategory],
                         "subcategory": tpl.subcategory, "template": tpl.id, "slot_fill": fill,
                         "prompt": pack.render(tpl, fill), "gloss": pack.gloss(tpl, fill)})
    return rows


def export_eval(pack: Pack, out_dir: Path, *, fills_per_template: int = 3, seed: int = 0) -> dict[str, Any]:
    """Write the held-out eval split (filled, :func:`eval_rows`) and the benign probes as JSONL for evaluation.

    Returns:
        Paths and row counts.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = out_dir / "eval_prompts.jsonl"
    rows = eval_rows(pack, fills_per_template=fills_per_template, seed=seed)
    with prompts.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    probes = out_dir / "benign_probes.jsonl"
    with probes.open("w", encoding="utf-8") as fh:
        for p in pack.probes.probes:
            fh.write(json.dumps({"id": p.id, "pack": pack.ref, "domain": p.domain, "subcategory": p.subcategory,
                                 "framed": p.text, "unframed": p.unframed, "kind": p.kind,
                                 "strategy": p.strategy, "expect": p.expect}, ensure_ascii=False) + "\n")
    return {"eval_prompts": str(prompts), "eval_rows": len(rows), "benign_probes": str(probes),
            "probe_rows": len(pack.probes.probes)}
