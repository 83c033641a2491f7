"""Stage C: the query judge scores the jailbroken query 1-4 (discard < 2); the generators answer it
under the sub-category's policy; the response judge scores each candidate for safety and cultural
coherence 1-5; the best wins and ties go to the generator used least so far in the dataset."""

from __future__ import annotations

from typing import Any

from coherence.judges import render_policy
from coherence.judges.verdict import Verdict
from coherence.pipeline.context import RunContext, gather


def jailbreak_of(ctx: RunContext, seed_id: str) -> dict[str, Any]:
    return next(a for a in ctx.store.attempts(seed_id) if a["jailbroken"])


def choose(candidates: list[dict[str, Any]], usage: dict[str, int], order: list[str]) -> str | None:
    """Best score wins; ties go to the least-used generator, then to config order. None if all unscored."""
    scored = [c for c in candidates if c["verdict"]["score"] is not None and c["text"].strip()]
    if not scored:
        return None
    return min(scored, key=lambda c: (-c["verdict"]["score"], usage.get(c["generator"], 0),
                                      order.index(c["generator"])))["generator"]


async def gather_candidates(ctx: RunContext, seed: dict[str, Any]) -> tuple[Verdict, list[dict[str, Any]]]:
    """Query verdict, then (if it passes) every generator's candidate with its quality verdict."""
    q = jailbreak_of(ctx, seed["id"])["prompt"]
    sub = seed["subcategory"]
    qv = await ctx.judge("query_judge").query_harm_async(sub, q)
    if qv.score is None or qv.score < ctx.config.pipeline.min_query_harm:
        return qv, []
    system = ctx.pack.rubrics.prompts.generator_system.format(
        category=ctx.pack.subcategories[sub].name, policy=render_policy(ctx.pack, sub))
    judge = ctx.judge("response_judge")

    async def one(index: int) -> dict[str, Any]:
        model = ctx.model("generators", index)
        out = await model.chat_async([{"role": "system", "content": system}, {"role": "user", "content": q}],
                                     role="generator", task={"subcategory": sub, "seed_id": seed["id"]})
        verdict = await judge.quality_async(sub, q, out.text)
        return {"generator": model.name, "text": out.text, "verdict": verdict.row()}

    return qv, list(await gather(*(one(i) for i in range(len(ctx.config.roles.generators)))))


async def respond_wave(ctx: RunContext, seeds: list[dict[str, Any]]) -> None:
    """Stage C for jailbroken seeds. Candidates are gathered concurrently; choices are made in seed
    order so that "least used so far" is the same on every run."""
    results = await gather(*(gather_candidates(ctx, s) for s in seeds))
    order = [ctx.pool.get(spec).name for spec in ctx.config.roles.generators]
    usage = ctx.store.chosen_generator_counts()
    for seed, (qv, candidates) in zip(seeds, results):
        ctx.store.record_verdict(seed["id"], "query_harm", "query", qv.row())
        if not candidates:
            why = "query judge unscored" if qv.score is None else \
                f"query harm {qv.score} < {ctx.config.pipeline.min_query_harm}"
            ctx.store.set_seed_status(seed["id"], status="query_rejected", stage="respond", reason=why)
        else:
            chosen = choose(candidates, usage, order)
            if chosen is None:
                status = ("no_candidate", "respond", "every candidate was empty or unscored")
            else:
                usage[chosen] = usage.get(chosen, 0) + 1
                best = next(c for c in candidates if c["generator"] == chosen)
                status = ("responded", "respond", f"r+ from {chosen} (score {best['verdict']['score']})")
            ctx.store.record_candidates(seed["id"], candidates, chosen=chosen, seed_status=status)
        ctx.advance("respond", 1)
