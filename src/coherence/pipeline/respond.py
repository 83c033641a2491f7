"""Stage C: the query judge scores the jailbroken query 1-4 (discard < 2); the generators answer it
under the sub-category's policy; the response judge scores each candidate for safety and cultural
coherence 1-5; the best wins and ties go to the generator used least so far in the dataset.

The model calls of a seed (:func:`gather_candidates`) run as soon as the seed is jailbroken; the
choice (:func:`commit_response`) is taken in seed order by the runner, so that "least used so far"
is the same on every run, resumed or not.

Provider refusals: a generator the provider refused gives no candidate (kept with its refusal class,
unscored); a seed whose every generator was refused stops here (status ``provider_refused``). A
query judge's refusal is an unscored verdict (the seed stops as ``query_rejected``).
"""

from __future__ import annotations

from typing import Any

from coherence.judges import render_policy
from coherence.judges.verdict import Verdict
from coherence.config import slot_name
from coherence.pipeline.context import RunContext, gather


def jailbreak_of(ctx: RunContext, seed_id: str) -> dict[str, Any]:
    return next(a for a in ctx.store.attempts(seed_id) if a["jailbroken"])


def _scored(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in candidates if c["verdict"] and c["verdict"]["score"] is not None and c["text"].strip()]


def choose(candidates: list[dict[str, Any]], usage: dict[str, int], order: list[str]) -> str | None:
    """Best score wins; ties go to the least-used generator slot, then to config order. Returns the
    winner's slot (``generators[1]``); None if all unscored."""
    scored = _scored(candidates)
    if not scored:
        return None
    return min(scored, key=lambda c: (-c["verdict"]["score"], usage.get(c["slot"], 0),
                                      order.index(c["slot"])))["slot"]


def unique_best(candidates: list[dict[str, Any]]) -> str | None:
    """The winner when one candidate alone has the best score (the choice then does not depend on
    usage, so stage D may start before the seed's turn); None on a tie or when nothing is scored."""
    scored = _scored(candidates)
    if not scored:
        return None
    top = max(c["verdict"]["score"] for c in scored)
    best = [c for c in scored if c["verdict"]["score"] == top]
    return best[0]["slot"] if len(best) == 1 else None


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
        model, slot = ctx.model("generators", index), slot_name("generators", index)
        out = await model.chat_async([{"role": "system", "content": system}, {"role": "user", "content": q}],
                                     role=slot, task={"subcategory": sub, "seed_id": seed["id"]})
        if out.refusal:
            return {"slot": slot, "model": model.name, "text": "", "verdict": None, "refusal": out.refusal}
        verdict = await judge.quality_async(sub, q, out.text)
        return {"slot": slot, "model": model.name, "text": out.text, "verdict": verdict.row()}

    return qv, list(await gather(*(one(i) for i in range(len(ctx.config.roles.generators)))))


def generator_order(ctx: RunContext) -> list[str]:
    """Generator slots in config order (the last tie-break)."""
    return [slot_name("generators", i) for i in range(len(ctx.config.roles.generators))]


def commit_response(ctx: RunContext, seed: dict[str, Any], qv: Verdict, candidates: list[dict[str, Any]], *,
                    usage: dict[str, int], order: list[str]) -> dict[str, Any] | None:
    """Record a seed's stage C outcome (one transaction) and update ``usage``; call in seed order.

    Returns:
        The chosen candidate (``slot``, ``model``, ``text``, ``score``), or None when the seed stops here.
    """
    ctx.store.record_verdict(seed["id"], "query_harm", "query", qv.row())
    chosen_row = None
    if not candidates:
        why = f"query judge unscored ({qv.reason})" if qv.score is None else \
            f"query harm {qv.score} < {ctx.config.pipeline.min_query_harm}"
        ctx.store.set_seed_status(seed["id"], status="query_rejected", stage="respond", reason=why)
    else:
        chosen = choose(candidates, usage, order)
        refused = [c for c in candidates if c.get("refusal")]
        if chosen is None and len(refused) == len(candidates):
            status = ("provider_refused", "respond", "every generator was refused by the provider: " +
                      ", ".join(f"{c['slot']} ({c['model']}): {c['refusal']}" for c in refused))
        elif chosen is None:
            status = ("no_candidate", "respond", "every candidate was empty, unscored or refused")
        else:
            usage[chosen] = usage.get(chosen, 0) + 1
            best = next(c for c in candidates if c["slot"] == chosen)
            chosen_row = {"slot": chosen, "model": best["model"], "text": best["text"],
                          "score": best["verdict"]["score"]}
            status = ("responded", "respond",
                      f"r+ from {chosen} ({best['model']}, score {best['verdict']['score']})")
        ctx.store.record_candidates(seed["id"], candidates, chosen=chosen, seed_status=status)
    ctx.advance("respond", 1)
    return chosen_row

