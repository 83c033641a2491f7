"""Stage A: seed queries from templates, one per (sub-category, template, slot fill); near-duplicates
removed (kept in the store with their reason)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterable
from typing import Any

from coherence.judges.text import norm
from coherence.packs.fill import draw_fills
from coherence.pipeline.context import RunContext, gather_bounded


def seed_id(template_id: str, fill: dict[str, str], variant: int = 0) -> str:
    blob = json.dumps([template_id, fill, variant] if variant else [template_id, fill], sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


async def run_seed_stage(ctx: RunContext) -> None:
    """Fill every train template ``seeds_per_template`` times and store the seeds (idempotent)."""
    if ctx.store.get_meta("stage_a_done"):
        return
    pack, cfg = ctx.pack, ctx.config.pipeline
    filler = ctx.model("slot_filler")
    prompts = pack.rubrics.prompts
    jobs: list[tuple[Any, dict[str, str], int]] = []
    for template in pack.reviewed_templates("train"):  # eval templates never reach training data
        rng = random.Random(f"{cfg.random_seed}:{template.id}")
        fills = draw_fills(template.slots, pack.templates.slots, cfg.seeds_per_template, rng)
        jobs += [(template, fill, variant) for variant in range(cfg.variants_per_fill) for fill in fills]

    async def fill_one(template: Any, fill: dict[str, str], variant: int) -> str:
        hints = "\n".join(f"{k}: {v}" for k, v in fill.items())
        messages = [{"role": "user", "content": prompts.slot_filler.format(template=template.text, slots=hints)}]
        task: dict[str, Any] = {"template": template.text, "slot_fill": fill}
        if variant:
            task["variant"] = variant  # a separate call (and cache entry): the filler samples a new query
        out = await filler.chat_async(messages, role="slot_filler", task=task)
        ctx.advance("seed", 1)
        return out.text.strip()

    # at most a few times the filler's concurrency in flight: 100,000 pending tasks would cost ~0.5 GB
    texts = await gather_bounded([lambda j=j: fill_one(*j) for j in jobs], limit=4 * filler.spec.max_concurrency + 64)
    by_sub: dict[str, list[str]] = {}
    for (template, _, _), text in zip(jobs, texts):
        by_sub.setdefault(template.subcategory, []).append(text)
    kept = {sub: NearDuplicates(cfg.near_duplicate_threshold, corpus=t) for sub, t in by_sub.items()}
    del by_sub
    rows: list[dict[str, Any]] = []
    for order, ((template, fill, variant), text) in enumerate(zip(jobs, texts)):
        status, reason = "active", ""
        index = kept[template.subcategory]
        if not text:
            status, reason = "empty", "slot filler returned nothing"
        else:
            sim = index.first_match(text)
            if sim is not None:
                status, reason = "duplicate", f"near-duplicate (3-gram Jaccard {sim:.2f})"
        if status == "active":
            index.add(text)
        rows.append({"id": seed_id(template.id, fill, variant), "ord": order, "domain": pack.domain_of[template.subcategory],
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


class NearDuplicates:
    """The kept texts of one sub-category, searchable for the first one (in the order kept) whose
    character 3-gram Jaccard similarity with a new text reaches ``threshold``.

    Same answers as comparing with every kept text in turn (:func:`ngram_overlap`), but with prefix
    filtering: two gram sets with Jaccard >= t share a gram among the first ``|A| - ceil(t|A|) + 1``
    grams of each (in one global order), so only texts sharing such a gram are compared. The order is
    rarest first over ``corpus`` (every text that will be searched), so that prefixes are made of rare
    grams and few texts are compared. Stage A over 100,000 seeds is then near-linear, not quadratic.
    """

    def __init__(self, threshold: float, n: int = 3, *, corpus: Iterable[str] = ()) -> None:
        self.threshold, self.n = threshold, n
        self.kept: list[str] = []  # texts, not gram sets: 100,000 gram sets would take ~0.5 GB
        self.index: dict[str, list[int]] = {}
        self.freq: dict[str, int] = {}
        for text in corpus:
            for g in self._grams(text):
                self.freq[g] = self.freq.get(g, 0) + 1

    def _grams(self, text: str) -> frozenset[str]:
        s = norm(text)
        return frozenset(s[i:i + self.n] for i in range(max(0, len(s) - self.n + 1)))

    def _prefix(self, grams: frozenset[str]) -> list[str]:
        overlap = math.ceil(self.threshold * len(grams) - 1e-9)  # the least overlap a match can have
        return sorted(grams, key=lambda g: (self.freq.get(g, 0), g))[:len(grams) - overlap + 1]

    def first_match(self, text: str) -> float | None:
        """Similarity with the first kept text at or above the threshold, or None."""
        grams = self._grams(text)
        if not grams:
            return None
        candidates = sorted({i for g in self._prefix(grams) for i in self.index.get(g, ())})
        for i in candidates:
            other = self._grams(self.kept[i])
            sim = len(grams & other) / len(grams | other)
            if sim >= self.threshold:
                return sim
        return None

    def add(self, text: str) -> None:
        grams = self._grams(text)
        self.kept.append(text)
        for g in self._prefix(grams):
            self.index.setdefault(g, []).append(len(self.kept) - 1)


def _interleave(groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for group in itertools.zip_longest(*groups) for r in group if r is not None]
