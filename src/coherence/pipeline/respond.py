"""Stage C: the query judge scores the jailbroken query 1-4 (discard < 2); the generators answer it
under the sub-category's policy; the response judge scores each candidate for safety and cultural
coherence 1-5; the best wins and ties go to the generator used least so far in the dataset.

The model calls of a seed (:func:`gather_candidates`) run as soon as the seed is jailbroken; the
choice (:func:`commit_response`) is taken in seed order by the runner, so that "least used so far"
is the same on every run, resumed or not.
"""

from __future__ import annotations

from typing import Any

from coherence.judges import render_policy
from coherence.judges.verdict import Verdict
from coherence.pipeline.context import RunContext, gather


def jailbreak_of(ctx: RunContext, seed_id: str) -> dict[str, Any]:
    return next(a for a in ctx.store.attempts(seed_id) if a["jailbroken"])


def _scored(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in candidates if c["verdict"]["score"] is not None and c["text"].strip()]


def choose(candidates: list[dict[str, Any]], usage: dict[str, int], order: list[str]) -> str | None:
    """Best score wins; ties go to the least-used generator, then to config order. None if all unscored."""
    scored = _scored(candidates)
    if not scored:
        return None
    return min(scored, key=lambda c: (-c["verdict"]["score"], usage.get(c["generator"], 0),
                                      order.index(c["generator"])))["generator"]


def unique_best(candidates: list[dict[str, Any]]) -> str | None:
    """The winner when one candidate alone has the best score (the choice then does not depend on
    usage, so stage D may start before the seed's turn); None on a tie or when nothing is scored."""
    scored = _scored(candidates)
    if not scored:
        return None
    top = max(c["verdict"]["score"] for c in scored)
    best = [c for c in scored if c["verdict"]["score"] == top]
    return best[0]["generator"] if len(best) == 1 else None


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


def generator_order(ctx: RunContext) -> list[str]:
    """Generator names in config order (the last tie-break)."""
    return [ctx.pool.get(spec).name for spec in ctx.config.roles.generators]


def commit_response(ctx: RunContext, seed: dict[str, Any], qv: Verdict, candidates: list[dict[str, Any]], *,
                    usage: dict[str, int], order: list[str]) -> dict[str, Any] | None:
    """Record a seed's stage C outcome (one transaction) and update ``usage``; call in seed order.

    Returns:
        The chosen candidate (``generator``, ``text``, ``score``), or None when the seed stops here.
    """
    ctx.store.record_verdict(seed["id"], "query_harm", "query", qv.row())
    chosen_row = None
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
            chosen_row = {"generator": chosen, "text": best["text"], "score": best["verdict"]["score"]}
            status = ("responded", "respond", f"r+ from {chosen} (score {best['verdict']['score']})")
        ctx.store.record_candidates(seed["id"], candidates, chosen=chosen, seed_status=status)
    ctx.advance("respond", 1)
    return chosen_row

