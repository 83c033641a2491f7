"""``coherence run --dry-run``: calls, tokens and cost per role, before anything is spent.

Two figures per role: the upper bound (every seed attacked ``max_attempts`` times, every attempt a
jailbreak) and an expectation under stated rates (jailbreak rate per attempt, filter pass rate), which
also stops once the target count is reached. Tokens are counted from the prompts this pack and config
actually produce (rendered for a sample of seeds) with the estimator ``--max-cost`` uses
(:func:`coherence.models.calls.estimate_tokens`, UTF-8 bytes / 3). The upper bound prices every
completion at the bound ``--max-cost`` reserves (:func:`coherence.models.calls.completion_bound`: the
role's ``max_tokens``, else the model's maximum output); the expectation at a typical length per role
(capped by that bound). Prices come from LiteLLM's local price table.
"""

from __future__ import annotations

import math
import random
from typing import Any

from coherence.config import ModelSpec, RunConfig
from coherence.judges.llm import render_policy
from coherence.models import price
from coherence.models.calls import BYTES_PER_TOKEN, completion_bound
from coherence.packs.fill import draw_fills, fill_space
from coherence.packs.loader import Pack
from coherence.pipeline.seed import plan_seeds, windows

TYPICAL_COMPLETION = {"target": 400, "attacker": 200, "slot_filler": 80, "generators": 600,
                      "query_judge": 60, "response_judge": 60, "filter_judges": 120}


def _more_seeds(cfg: Any, spaces: list[int], distinct: int, needed: int) -> str:
    """What to set so that stage A draws ``needed`` seeds: more fills per template, and if the pack's
    distinct fills are too few, several slot-filler wordings of each."""
    variants = max(cfg.variants_per_fill, math.ceil(needed / max(distinct, 1)))
    per_template = next((k for k in range(cfg.seeds_per_template, max(spaces, default=1) + 1)
                         if variants * sum(min(k, n) for n in spaces) >= needed), max(spaces, default=1))
    if cfg.max_seeds and cfg.max_seeds < needed:
        return f"raise pipeline.max_seeds to {needed:,} or more"
    if variants == cfg.variants_per_fill:
        return f"set pipeline.seeds_per_template to {per_template:,}"
    return (f"the pack has {distinct:,} distinct slot fills in all: with an LLM slot filler sampling above "
            f"temperature 0, set pipeline.variants_per_fill to {variants} and pipeline.seeds_per_template to "
            f"{per_template:,}, or add slot values or templates to the pack")


def estimate(pack: Pack, config: RunConfig, *, jailbreak_rate: float = 0.3, pass_rate: float = 0.5) -> dict[str, Any]:
    """Per-role estimate of calls, tokens and cost; see the module docstring for the model."""
    cfg, roles = config.pipeline, config.roles
    templates = pack.reviewed_templates("train")
    spaces = [fill_space(t.slots, pack.templates.slots) for t in templates]
    distinct = sum(spaces)
    seeds = len(plan_seeds(pack, cfg))  # what stage A plans (fills, wordings, the max_seeds cap)
    rng = random.Random(cfg.random_seed)
    sample = rng.sample(templates, min(20, len(templates)))
    queries = [t.text.format_map(draw_fills(t.slots, pack.templates.slots, 1, rng)[0]) for t in sample]
    # sizes in UTF-8 bytes, the unit of the estimator (a Korean syllable is 3 bytes, about one token)
    size = lambda text: len(text.encode())  # noqa: E731
    q_chars = sum(map(size, queries)) / len(queries)
    per_char = sum(map(size, queries)) / max(sum(map(len, queries)), 1)  # bytes per character of the pack's text
    framing_chars = sum(size(f) for st in pack.attacks.strategies for f in st.framings) / sum(
        len(st.framings) for st in pack.attacks.strategies)
    policy_chars = sum(size(render_policy(pack, t.subcategory)) for t in sample) / len(sample)
    prompts = pack.rubrics.prompts
    attacked_prompt = q_chars + framing_chars
    # expected attempts per seed until the first jailbreak (or max_attempts)
    miss = 1 - jailbreak_rate
    attempts_per_seed = sum(miss ** k for k in range(cfg.max_attempts))
    p_jailbreak = 1 - miss ** cfg.max_attempts
    seeds_needed = math.ceil(cfg.target_count / max(p_jailbreak * pass_rate, 1e-9))
    exp_seeds = min(seeds, seeds_needed)
    bound = {"seeds": seeds, "attempts": seeds * cfg.max_attempts, "jailbroken": seeds}
    expected = {"seeds": exp_seeds, "attempts": exp_seeds * attempts_per_seed,
                "jailbroken": exp_seeds * p_jailbreak}
    n_gen = len(roles.generators)
    rows = []

    def add(role: str, spec: ModelSpec, calls_bound: float, calls_exp: float, prompt_bytes: float) -> None:
        if spec.heuristic_judge:
            calls_bound = calls_exp = 0  # heuristic judges make no model call
        bound_out = completion_bound(spec)
        typical = min(bound_out, float(spec.params.get("max_tokens") or TYPICAL_COMPLETION[role]))
        prompt_tokens = prompt_bytes / BYTES_PER_TOKEN
        unit_max, unit = price(spec, prompt_tokens, bound_out), price(spec, prompt_tokens, typical)
        rows.append({
            "role": role, "model": spec.model, "calls_max": round(calls_bound), "calls_expected": round(calls_exp),
            "tokens_expected": round(calls_exp * (prompt_tokens + typical)),
            "cost_max_usd": None if unit_max is None else round(calls_bound * unit_max, 2),
            "cost_expected_usd": None if unit is None else round(calls_exp * unit, 2),
        })

    # stage A fills only ahead of what the waves take (plus its lookahead)
    filled = min(seeds, exp_seeds + windows(roles.slot_filler.max_concurrency)[1])
    add("slot_filler", roles.slot_filler, seeds, filled, size(prompts.slot_filler) + q_chars)
    add("attacker", roles.attacker, bound["attempts"], expected["attempts"], size(prompts.attacker) + attacked_prompt)
    add("target", roles.target, bound["attempts"], expected["attempts"], attacked_prompt)
    add("response_judge", roles.response_judge, bound["attempts"] + bound["jailbroken"] * n_gen,
        expected["attempts"] + expected["jailbroken"] * n_gen,
        size(prompts.response_judge) + attacked_prompt + 1200 * per_char + policy_chars / 2)
    add("query_judge", roles.query_judge, bound["jailbroken"], expected["jailbroken"],
        size(prompts.query_judge) + attacked_prompt)
    for spec in roles.generators:
        add("generators", spec, bound["jailbroken"], expected["jailbroken"],
            size(prompts.generator_system) + policy_chars + attacked_prompt)
    for spec in roles.filter_judges:
        add("filter_judges", spec, bound["jailbroken"], expected["jailbroken"],
            size(prompts.filter_judge) + policy_chars + attacked_prompt + 3000 * per_char)
    known = [r for r in rows if r["cost_expected_usd"] is not None]
    accepted = min(cfg.target_count, math.floor(exp_seeds * p_jailbreak * pass_rate))
    warnings = []
    if accepted < cfg.target_count:
        warnings.append(f"expected ~{accepted:,} accepted triplets, short of target_count {cfg.target_count:,}: "
                        f"{seeds:,} seeds at these rates (fix: {_more_seeds(cfg, spaces, distinct, seeds_needed)})")
    return {
        "assumptions": {"jailbreak_rate_per_attempt": jailbreak_rate, "filter_pass_rate": pass_rate,
                        "bytes_per_token": BYTES_PER_TOKEN, "seeds": seeds, "expected_seeds": exp_seeds,
                        "distinct_fills": distinct},
        "expected_accepted": accepted,
        "warnings": warnings,
        "roles": rows,
        "total_cost_max_usd": round(sum(r["cost_max_usd"] for r in known), 2),
        "total_cost_expected_usd": round(sum(r["cost_expected_usd"] for r in known), 2),
        "unpriced_models": sorted({r["model"] for r in rows if r["cost_expected_usd"] is None}),
    }
