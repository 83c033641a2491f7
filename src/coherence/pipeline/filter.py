"""Stage D: the unanimous judge ensemble on the six criteria, then balance across the top-level
domains up to the target count. Rejected and over-quota triplets stay in the store with the reason.

The judges' calls (:func:`judge_triplet`) run as soon as a seed's r+ is known; the decision
(:func:`commit_triplet`, which spends the domain quota) is taken in seed order by the runner.
"""

from __future__ import annotations

from typing import Any

from coherence.judges import unanimous
from coherence.judges.verdict import Verdict
from coherence.pipeline.context import RunContext, gather
from coherence.pipeline.respond import jailbreak_of


def domain_quotas(ctx: RunContext) -> dict[str, int]:
    """Target count split evenly over the pack's domains (the remainder to the first ones)."""
    domains = [d.id for d in ctx.pack.taxonomy.domains]
    base, extra = divmod(ctx.config.pipeline.target_count, len(domains))
    return {d: base + (i < extra) for i, d in enumerate(domains)}


def remaining(ctx: RunContext) -> dict[str, int]:
    accepted = ctx.store.group_count("triplets", "domain", "status = 'accepted'")
    return {d: q - accepted.get(d, 0) for d, q in domain_quotas(ctx).items()}


def provenance(ctx: RunContext, seed: dict[str, Any], jb: dict[str, Any], chosen: dict[str, Any],
               verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a triplet came from. Judges and generators are named by role slot (``generators[1]``,
    ``filter_judges[0]``); ``models`` maps every slot to its model string."""
    store, roles = ctx.store, ctx.config.roles
    qv = store.verdicts(seed["id"], "query_harm")
    rv = store.verdicts(seed["id"], "response_harm")
    return {
        "pack": ctx.pack.ref, "pack_digest": ctx.pack.digest, "seed_id": seed["id"], "domain": seed["domain"],
        "subcategory": seed["subcategory"], "template": seed["template"], "slot_fill": seed["slot_fill"],
        "seed_text": seed["text"], "slot_filler": seed["filler"],
        "strategy": jb["strategy"], "attempt": jb["attempt"], "attacker": roles.attacker.model,
        "target": roles.target.model, "generator": chosen["slot"], "generator_model": chosen["model"],
        "models": roles.slot_models(),
        "scores": {
            "query_harm": {v["slot"]: v["score"] for v in qv},
            "rejected_harm": {v["slot"]: v["score"] for v in rv if v["subject"] == f"attempt:{jb['attempt']}"},
            "chosen_quality": {chosen["slot"]: chosen["score"]},
            "filter": {v["slot"]: v["passed"] for v in verdicts},
        },
        "offline_roles": roles.offline_models(),
    }


async def judge_triplet(ctx: RunContext, seed: dict[str, Any], chosen_text: str) -> tuple[dict[str, Any], list[Verdict]]:
    """Every filter judge's verdict on (q, r-, r+); returns the jailbreak attempt and the verdicts."""
    jb = jailbreak_of(ctx, seed["id"])
    judges = [ctx.judge("filter_judges", i) for i in range(len(ctx.config.roles.filter_judges))]
    verdicts = await gather(*(j.filter_async(seed["subcategory"], jb["prompt"], jb["response"], chosen_text)
                              for j in judges))
    return jb, list(verdicts)


def stored_choice(ctx: RunContext, seed_id: str) -> dict[str, Any]:
    """The chosen candidate of a seed whose stage C was committed."""
    return next(c for c in ctx.store.candidates(seed_id) if c["chosen"])


def commit_triplet(ctx: RunContext, seed: dict[str, Any], jb: dict[str, Any], chosen: dict[str, Any],
                   verdicts: list[Verdict], *, left: dict[str, int]) -> str:
    """Apply the unanimous rule and the domain quota (``left``, updated); call in seed order."""
    ok, reason = unanimous(verdicts)
    status = "accepted" if ok else "rejected"
    if ok and left.get(seed["domain"], 0) <= 0:
        status, reason = "over_quota", f"domain {seed['domain']} already has its quota"
    elif ok:
        left[seed["domain"]] -= 1
    rows = [v.row() for v in verdicts]
    ctx.store.record_triplet(
        seed_id=seed["id"], domain=seed["domain"], status=status, reason=reason,
        prompt=jb["prompt"], chosen=chosen["text"], rejected=jb["response"],
        provenance=provenance(ctx, seed, jb, chosen, rows), verdicts=rows)
    ctx.advance("filter", 1)
    return status

