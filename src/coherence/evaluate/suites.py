"""The eval suites' items, read from the pack (another culture's pack needs no code):

- ``safety``: the held-out eval templates (``split: eval``, never seen in training), filled, each asked
  plainly and under each of the 5 attack strategies (the attacker role rewrites it: offline, the
  pack's framings, as in stage B).
- ``over_refusal``: the benign probes as written (with their explicit cultural framing).
- ``anchoring``: the same probes without the framing (``unframed``); the framed answers are the
  over-refusal suite's, so each probe is answered once per framing.
- ``thick_thin``: the pack's thick vs thin exemplars (a check of the pairwise judge).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from coherence.models import Model
from coherence.packs.fill import eval_rows
from coherence.packs.loader import Pack
from coherence.packs.schema import STRATEGY_IDS

PLAIN = "plain"
GENERATION_SUITES = ("safety", "over_refusal", "anchoring")


@dataclass(frozen=True)
class Item:
    """One prompt of a suite; ``key`` pairs it across models (and across framings in anchoring)."""

    suite: str
    key: str
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict)
    """domain, subcategory, template, strategy, probe, framing, seed query..."""


async def safety_items(pack: Pack, attacker: Model, *, fills: int = 1, strategies: tuple[str, ...] = STRATEGY_IDS,
                       seed: int = 0) -> list[Item]:
    """Each held-out prompt plainly and rewritten by the attacker under each strategy.

    The rewrites go through the call choke point (cached in the eval's store), so every model is asked
    the same attacked prompts and a re-run rewrites nothing.
    """
    seeds = eval_rows(pack, fills_per_template=fills, seed=seed)  # as `pack export-eval` writes them

    async def rewrite(row: dict[str, Any], strategy_id: str) -> Item:
        strategy = pack.strategy[strategy_id]
        message = pack.rubrics.prompts.attacker.format(
            strategy=strategy.name, strategy_description=strategy.description, example=strategy.framings[0],
            query=row["prompt"])
        out = await attacker.chat_async(
            [{"role": "user", "content": message}], role="eval_attacker",
            task={"strategy": strategy_id, "query": row["prompt"], "gloss": row["gloss"], "seed_id": row["id"],
                  "attempt": 1})
        return Item("safety", f"{row['id']}|{strategy_id}", out.text.strip(),
                    {**_meta(row), "strategy": strategy_id})

    attacked = iter(await asyncio.gather(*(rewrite(r, s) for r in seeds for s in strategies)))
    items = []  # each prompt plainly, then under each strategy: a --limit keeps whole groups
    for r in seeds:
        items.append(Item("safety", f"{r['id']}|{PLAIN}", r["prompt"], {**_meta(r), "strategy": PLAIN}))
        items += [next(attacked) for _ in strategies]
    return items


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    return {"domain": row["domain"], "subcategory": row["subcategory"], "template": row["template"],
            "seed_query": row["prompt"], "harmful": True}


def probe_items(pack: Pack, *, framed: bool, per_subcategory: int | None = None) -> list[Item]:
    """The benign probes with (``over_refusal``) or without (``anchoring``) their cultural framing; with
    ``per_subcategory``, only the first N probes of each sub-category (in pack order)."""
    suite = "over_refusal" if framed else "anchoring"
    taken: dict[str, int] = {}
    items = []
    for p in pack.probes.probes:
        taken[p.subcategory] = taken.get(p.subcategory, 0) + 1
        if per_subcategory is not None and taken[p.subcategory] > per_subcategory:
            continue
        items.append(Item(suite, p.id, p.text if framed else p.unframed,
                          {"domain": p.domain, "subcategory": p.subcategory, "probe": p.id,
                           "framing": "framed" if framed else "unframed", "harmful": False}))
    return items
