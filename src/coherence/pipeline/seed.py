"""Stage A: seed queries from templates, one per (sub-category, template, slot fill); near-duplicates
removed (kept in the store with their reason). It runs beside the attack stage (:class:`SeedStream`)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import random
import re
from collections.abc import Iterable
from typing import Any

from coherence.config import PipelineConfig
from coherence.judges.text import norm
from coherence.models import BudgetReached
from coherence.packs.fill import draw_fills
from coherence.packs.loader import Pack
from coherence.pipeline.context import RunContext, first_error


def seed_id(template_id: str, fill: dict[str, str], variant: int = 0) -> str:
    blob = json.dumps([template_id, fill, variant] if variant else [template_id, fill], sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


Job = tuple[Any, dict[str, str], int]
"""One seed to fill: (template, slot fill, variant)."""

COMMIT_BATCH = 32
"""Seeds decided but not yet written are written in batches of this many (or at once when a wave waits)."""
WINDOW_PER_SLOT, WINDOW_EXTRA = 4, 64
"""Seeds filled ahead of the first undecided one: at most this many per slot of the filler's
concurrency, plus this many."""


def windows(concurrency: int) -> tuple[int, int]:
    """(window, lookahead) of stage A for a filler of this concurrency. The window: seeds filled but
    not yet decided, at most (memory stays flat however many are planned). The lookahead: how far
    past the last seed a wave took stage A fills ahead; at least two windows plus a batch, so that a
    seed started while a wave waited is always within the target that wave then sets."""
    window = WINDOW_PER_SLOT * concurrency + WINDOW_EXTRA
    return window, 2 * window + COMMIT_BATCH


def plan_seeds(pack: Pack, cfg: PipelineConfig) -> list[Job]:
    """Every seed stage A may fill, in seed order (``ord``): ``seeds_per_template`` fills of every train
    template (times ``variants_per_fill`` wordings), interleaved by template, then sub-category, then
    domain, so that every wave of the attack stage (and ``domain_patience``'s first seeds) covers them
    all, not many fills of a few templates; capped at ``max_seeds``. A pure function of pack and config."""
    tree: dict[str, dict[str, list[list[Job]]]] = {}
    for template in pack.reviewed_templates("train"):  # eval templates never reach training data
        rng = random.Random(f"{cfg.random_seed}:{template.id}")
        fills = draw_fills(template.slots, pack.templates.slots, cfg.seeds_per_template, rng)
        jobs = [(template, fill, variant) for variant in range(cfg.variants_per_fill) for fill in fills]
        tree.setdefault(pack.domain_of[template.subcategory], {}).setdefault(template.subcategory, []).append(jobs)
    ordered = _interleave([_interleave([_interleave(templates) for templates in subs.values()])
                           for subs in tree.values()])
    return ordered[:cfg.max_seeds] if cfg.max_seeds is not None else ordered


class SeedStream:
    """Stage A as a stream that runs beside the waves: seeds are filled in seed order, decided
    (near-duplicate or not) in that order and written as a growing prefix, so the attack stage starts
    on the first seeds while later ones are still being filled.

    It fills ahead of demand: up to ``target`` (``lookahead`` seeds past the last seed a wave has
    taken, kept in the store), and further while a wave waits for seeds of a domain (:meth:`take`).
    A wave takes the first ``k`` seeds of a domain once the written prefix holds them (or stage A
    has filled every planned seed), so which seeds it takes, and where stage A ends, never depend on
    timing: a run killed at any point resumes to exactly the seeds of an uninterrupted one (with a
    deterministic slot filler; a fill in flight at the kill is asked again). Seeds that
    no wave will need are never filled (a run that meets its quotas early pays for few slot fills).
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        cfg, store = ctx.config.pipeline, ctx.store
        self.filler = ctx.model("slot_filler")
        self.jobs = plan_seeds(ctx.pack, cfg)
        self.window, self.lookahead = windows(self.filler.spec.max_concurrency)
        self.prefix = store.count("seeds")
        """Seeds written (always the first ``prefix`` of :attr:`jobs`)."""
        self.target = min(len(self.jobs), max(store.get_meta("seed_target", 0), self.lookahead))
        self.stopped: str | None = None
        """Why stage A stopped before it was done ("time", "cost"), if it did."""
        self._closing = False
        self._waiting = 0
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()

    @property
    def complete(self) -> bool:
        """Every planned seed is written."""
        return self.prefix >= len(self.jobs)

    def close(self) -> None:
        """No wave will ask for more: fill up to the target and stop."""
        self._closing = True
        self._wake.set()

    def _raise_target(self, target: int) -> None:
        target = min(len(self.jobs), target)
        if target > self.target:
            self.target = target
            self.ctx.store.set_meta("seed_target", target)
            self._wake.set()

    async def take(self, domain: str, k: int) -> list[dict[str, Any]] | None:
        """The first ``k`` seeds of ``domain`` that are active and in no wave, waiting until stage A
        has written them (fewer if stage A has written every planned seed); None if stage A stopped
        first (time or cost budget: the next invocation takes them)."""
        store = self.ctx.store
        self._waiting += 1
        self._wake.set()
        try:
            while True:
                rows = store.active_seeds(domain, k)
                if len(rows) >= k or self.complete:
                    if rows:
                        self._raise_target(rows[-1]["ord"] + 1 + self.lookahead)
                    return rows
                if self.stopped:
                    return None
                self._progress.clear()
                await self._progress.wait()
        finally:
            self._waiting -= 1

    async def run(self) -> None:
        """Fill, decide and write seeds until the target is reached and :meth:`close` was called,
        every planned seed is written, or the time or cost budget stops it."""
        store = self.ctx.store
        try:
            if not self.complete:
                await self._fill()
        except BudgetReached as exc:  # its finished calls are cached for the next invocation
            self.stopped = exc.limit
        except BaseException:
            self.stopped = "error"  # a wave waiting for seeds gives up (the run is failing anyway)
            raise
        finally:
            if self.complete:
                store.set_meta("stage_a_done", True)
            self._progress.set()

    async def _fill(self) -> None:
        store, cfg = self.ctx.store, self.ctx.config.pipeline
        jobs, prompts = self.jobs, self.ctx.pack.rubrics.prompts
        index = self._near_duplicates(cfg.near_duplicate_threshold)
        texts: dict[int, str] = {}
        refused: dict[int, str] = {}
        decided, buffer, in_flight = self.prefix, [], 0

        def write() -> None:
            nonlocal buffer
            if buffer:
                store.add_seeds(buffer)
                self.prefix += len(buffer)
                buffer = []
                self._progress.set()

        def decide() -> None:
            nonlocal decided
            while decided in texts:
                template, fill, variant = jobs[decided]
                text = texts.pop(decided)
                kept = index.setdefault(template.subcategory, NearDuplicates(cfg.near_duplicate_threshold))
                status, reason = "active", ""
                if decided in refused:
                    status, reason = "provider_refused", refused.pop(decided)
                elif not text:
                    status, reason = "empty", "slot filler returned nothing"
                else:
                    sim = kept.first_match(text)
                    if sim is not None:
                        status, reason = "duplicate", f"near-duplicate (3-gram Jaccard {sim:.2f})"
                if status == "active":
                    kept.add(text)
                buffer.append({"id": seed_id(template.id, fill, variant), "ord": decided,
                               "domain": self.ctx.pack.domain_of[template.subcategory],
                               "subcategory": template.subcategory, "template": template.id, "slot_fill": fill,
                               "text": text, "filler": self.filler.name, "status": status, "stage": "seed",
                               "reason": reason})
                decided += 1
            if len(buffer) >= COMMIT_BATCH or self._waiting or not in_flight:
                write()
            self._wake.set()

        async def fill_one(i: int) -> None:
            nonlocal in_flight
            template, fill, variant = jobs[i]
            hints = "\n".join(f"{k}: {v}" for k, v in fill.items())
            messages = [{"role": "user", "content": prompts.slot_filler.format(template=template.text, slots=hints)}]
            task: dict[str, Any] = {"template": template.text, "slot_fill": fill}
            if variant:
                task["variant"] = variant  # a separate call (and cache entry): the filler samples a new query
            try:
                out = await self.filler.chat_async(messages, role="slot_filler", task=task)
            finally:
                in_flight -= 1
            self.ctx.advance("seed", 1)
            if out.refusal:
                refused[i] = (f"slot filler ({self.filler.name}) refused by the provider ({out.refusal}): "
                              f"{out.extra.get('reason', '')[:200]}")
            texts[i] = out.text.strip()
            decide()

        try:
            async with asyncio.TaskGroup() as group:
                i = decided
                while i < len(jobs):
                    # past the target only while a wave waits; never more than a window past the decided prefix
                    bound = decided + self.window if self._waiting else min(self.target, decided + self.window)
                    if i >= bound:
                        if self._closing and not self._waiting and i >= self.target:
                            break
                        self._wake.clear()
                        await self._wake.wait()
                        continue
                    if self.ctx.out_of_time():
                        self.stopped = "time"
                        break
                    in_flight += 1
                    group.create_task(fill_one(i))
                    i += 1
        except BaseExceptionGroup as eg:
            raise first_error(eg) from None
        finally:
            write()  # what was decided is a prefix in seed order: keep it

    def _near_duplicates(self, threshold: float) -> dict[str, NearDuplicates]:
        """One index per sub-category, its grams ordered rarest first by how often they occur in
        the planned seeds' templates and slot values (known before any text is filled), holding
        the seeds already written that were kept."""
        weights: dict[str, dict[str, int]] = {}
        for template, fill, _ in self.jobs:
            w = weights.setdefault(template.subcategory, {})
            for piece in (re.sub(r"\{[^}]*\}", " ", template.text), *fill.values()):
                w[piece] = w.get(piece, 0) + 1
        index = {sub: NearDuplicates(threshold, weights=w.items()) for sub, w in weights.items()}
        for sub, text in self.ctx.store.kept_seed_texts():
            index[sub].add(text)
        return index


class NearDuplicates:
    """The kept texts of one sub-category, searchable for the first one (in the order kept) whose
    character 3-gram Jaccard similarity with a new text reaches ``threshold``.

    Same answers as comparing with every kept text in turn (:func:`ngram_overlap`), but with prefix
    filtering: two gram sets with Jaccard >= t share a gram among the first ``|A| - ceil(t|A|) + 1``
    grams of each (in one global order), so only texts sharing such a gram are compared. Any fixed order
    gives the same answers; rarest first (over ``weights``, (text, count) pairs such as a template's
    words and how many seeds use it) makes prefixes of rare grams, so few texts
    are compared. Stage A over 100,000 seeds is then near-linear, not quadratic.
    """

    def __init__(self, threshold: float, n: int = 3, *, weights: Iterable[tuple[str, int]] = ()) -> None:
        self.threshold, self.n = threshold, n
        self.kept: list[str] = []  # texts, not gram sets: 100,000 gram sets would take ~0.5 GB
        self.index: dict[str, list[int]] = {}
        self.freq: dict[str, int] = {}
        for text, weight in weights:
            for g in self._grams(text):
                self.freq[g] = self.freq.get(g, 0) + weight

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
