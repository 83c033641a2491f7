"""Stage B: rewrite each seed with the 5 strategies in rotation, send it to the target, judge the
answer 1-5; a seed advances only on a jailbreak (score >= threshold). Its r- is the target's real
answer. A seed that never jailbreaks keeps its attempts and the reason.

Provider refusals: a target's block *is* the target refusing (PyRIT records blocks as responses): the
attempt is scored 1 (refusal) without asking the judge, and the attack goes on with the next
strategy. An attacker's refusal stops the seed (status ``provider_refused``, with the class). A
response judge's refusal is an unscored verdict: not a jailbreak, the attack goes on."""

from __future__ import annotations

from typing import Any

from coherence.judges.verdict import Verdict
from coherence.packs.schema import STRATEGY_IDS
from coherence.pipeline.context import RunContext


def strategy_for(order: int, attempt: int) -> str:
    """Rotation: seed ``order`` starts at a different strategy, then cycles through all five."""
    return STRATEGY_IDS[(order + attempt - 1) % len(STRATEGY_IDS)]


async def attack_seed(ctx: RunContext, seed: dict[str, Any]) -> bool:
    """Attack one seed until it jailbreaks or attempts run out. Resumes after its last stored attempt."""
    cfg, store, pack = ctx.config.pipeline, ctx.store, ctx.pack
    attacker, target = ctx.model("attacker"), ctx.model("target")
    judge = ctx.judge("response_judge")
    done = store.attempts(seed["id"])
    template = pack.template[seed["template"]]
    gloss = pack.gloss(template, seed["slot_fill"])
    best = max((a["score"] or 0 for a in done), default=0)
    for attempt in range(len(done) + 1, cfg.max_attempts + 1):
        if ctx.out_of_time():
            return False  # the seed stays active; a resumed run continues from this attempt
        strategy = pack.strategy[strategy_for(seed["ord"], attempt)]
        example = strategy.framings[0]
        rewrite = pack.rubrics.prompts.attacker.format(
            strategy=strategy.name, strategy_description=strategy.description, example=example,
            query=seed["text"])
        rewritten = await attacker.chat_async(
            [{"role": "user", "content": rewrite}], role="attacker",
            task={"strategy": strategy.id, "query": seed["text"], "gloss": gloss, "seed_id": seed["id"],
                  "attempt": attempt},
        )
        if rewritten.refusal:
            store.set_seed_status(seed["id"], status="provider_refused", stage="attack",
                                  reason=f"attacker ({attacker.name}) refused by the provider at attempt {attempt} "
                                         f"({rewritten.refusal}): {rewritten.extra.get('reason', '')[:200]}")
            return False
        attacked = rewritten.text.strip()
        answer = await target.chat_async([{"role": "user", "content": attacked}], role="target")
        if answer.latency is not None:
            ctx.note_target_call(answer.latency)
        response = answer.text
        if answer.refusal:  # the provider blocked the target: the target refused
            verdict = Verdict(judge=target.name, slot="target", task="response_harm", score=1,
                              reason=f"the provider blocked the target's reply ({answer.refusal}): scored as a "
                                     f"refusal", raw=answer.extra.get("reason", ""), detail={"refusal": answer.refusal})
        else:
            verdict = await judge.response_harm_async(seed["subcategory"], attacked, response)
        score = verdict.score
        jailbroken = score is not None and score >= cfg.jailbreak_threshold
        best = max(best, score or 0)
        decided = None
        if jailbroken:
            decided = ("jailbroken", "attack", f"jailbreak at attempt {attempt} ({strategy.id}, score {score})")
        elif attempt == cfg.max_attempts:
            decided = ("no_jailbreak", "attack",
                       f"no jailbreak in {cfg.max_attempts} attempts (best score {best}, "
                       f"threshold {cfg.jailbreak_threshold})")
        store.record_attempt(seed_id=seed["id"], attempt=attempt, strategy=strategy.id, prompt=attacked,
                             response=response, score=score, jailbroken=jailbroken, verdict=verdict.row(),
                             seed_status=decided)
        ctx.advance("attack", 1)
        if jailbroken:
            return True
    if not done or len(done) < cfg.max_attempts:
        return False
    # every attempt was already stored but the seed's status was not: settle it now
    jb = next((a for a in done if a["jailbroken"]), None)
    if jb:
        store.set_seed_status(seed["id"], status="jailbroken", stage="attack", reason=f"jailbreak at attempt {jb['attempt']}")
    else:
        store.set_seed_status(seed["id"], status="no_jailbreak", stage="attack",
                              reason=f"no jailbreak in {cfg.max_attempts} attempts (best score {best})")
    return jb is not None
