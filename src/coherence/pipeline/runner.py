"""Run stages A-D over a pack with a progress bar per stage; resumable from the run store.

Stage A seeds everything once. Then, in waves, seeds of the domains that still lack accepted
triplets are attacked (B), answered (C) and filtered (D), until every domain has its quota or the
seeds run out. A killed run resumes where it stopped: finished items are read from the store and
finished model calls from its cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from coherence.config import RunConfig
from coherence.errors import CoherenceError
from coherence.export import export_run
from coherence.models import ModelPool
from coherence.packs.loader import load_pack
from coherence.pipeline.attack import attack_seed
from coherence.pipeline.context import Advance, RunContext, gather
from coherence.pipeline.filter import domain_quotas, filter_wave, remaining
from coherence.pipeline.respond import respond_wave
from coherence.pipeline.seed import run_seed_stage
from coherence.store import Store

MAX_WAVE_PER_DOMAIN = 48


def run_id_for(config: RunConfig, pack_digest: str) -> str:
    """Same config and same pack give the same run id, so running again resumes (zero new calls)."""
    blob = config.model_dump_json(exclude={"runs_dir": True, "pipeline": {"max_minutes"}}) + pack_digest
    name = Path(config.pack).name
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _wave(ctx: RunContext) -> list[dict[str, Any]]:
    """Next seeds to attack: per open domain, enough to fill its quota at the yield seen so far."""
    left = remaining(ctx)
    attacked = ctx.store.group_count("seeds", "domain", "stage != 'seed'")
    accepted = ctx.store.group_count("triplets", "domain", "status = 'accepted'")
    active: dict[str, list[dict[str, Any]]] = {}
    for seed in ctx.store.seeds(status="active"):
        active.setdefault(seed["domain"], []).append(seed)
    wave = []
    patience = ctx.config.pipeline.domain_patience
    for domain, need in left.items():
        seen = attacked.get(domain, 0)
        if need <= 0 or (patience and seen >= patience and not accepted.get(domain)):
            continue
        rate = max(accepted.get(domain, 0) / seen, 0.1) if seen >= 8 else 0.5
        take = min(MAX_WAVE_PER_DOMAIN, max(4, math.ceil(need / rate)))
        if patience and not accepted.get(domain):
            take = min(take, patience - seen)
        wave += active.get(domain, [])[:take]
    return sorted(wave, key=lambda s: s["ord"])


OPEN = ("active", "jailbroken", "responded")
"""Seed statuses that still have work to do."""


async def run_stages_async(ctx: RunContext) -> None:
    """Stages A-D, wave by wave, until every domain has its quota or no seed is left.

    A wave's members are fixed in the store before it starts, and within a wave every decision is
    taken in seed order, so a run killed at any point and resumed ends exactly as an uninterrupted one.
    """
    await run_seed_stage(ctx)
    store = ctx.store
    while True:
        number = store.get_meta("wave", 0)
        members = store.seeds(wave=number) if number else []
        if not any(s["status"] in OPEN for s in members):
            wave = _wave(ctx)
            if not wave:
                break
            number = store.start_wave([s["id"] for s in wave])
        if ctx.out_of_time():
            return
        members = store.seeds(wave=number)
        await gather(*(attack_seed(ctx, s) for s in members if s["status"] == "active"))
        jailbroken = store.seeds(wave=number, status="jailbroken")
        if jailbroken:
            await respond_wave(ctx, jailbroken)
        responded = store.seeds(wave=number, status="responded")
        if responded:
            await filter_wave(ctx, responded)


def funnel(store: Store) -> dict[str, Any]:
    """Counts at every stage, from the store (so they hold across resumes)."""
    status = store.group_count("seeds", "status")
    seeds = sum(status.values())
    attacked = store.count("seeds", "stage != 'seed'")
    return {
        "seeds": seeds,
        "duplicates_removed": status.get("duplicate", 0),
        "attacked": attacked,
        "attempts": store.count("attempts"),
        "jailbroken": store.count("seeds", "status NOT IN ('active','duplicate','empty','no_jailbreak')"),
        "no_jailbreak": status.get("no_jailbreak", 0),
        "query_rejected": status.get("query_rejected", 0),
        "responded": store.count("seeds", "stage = 'filter'"),
        "accepted": status.get("accepted", 0),
        "filter_rejected": status.get("rejected", 0),
        "over_quota": status.get("over_quota", 0),
        "not_attacked": status.get("active", 0),
    }


def write_summary(run_dir: Path, ctx: RunContext, started: float, extra: dict[str, Any]) -> dict[str, Any]:
    store, stats = ctx.store, ctx.pool.stats
    summary = {
        "run_id": run_dir.name,
        "pack": ctx.pack.ref,
        "funnel": funnel(store),
        "accepted_per_domain": {d: store.group_count("triplets", "domain", "status = 'accepted'").get(d, 0)
                                for d in domain_quotas(ctx)},
        "quota_per_domain": domain_quotas(ctx),
        "jailbreaks_per_strategy": store.group_count("attempts", "strategy", "jailbroken = 1"),
        "domains_given_up": _given_up(ctx),
        "this_invocation": {
            "model_calls_made": stats.made, "model_calls_cached": stats.cached, "retries": stats.retries,
            "input_tokens": stats.input_tokens, "output_tokens": stats.output_tokens,
            "cost_usd": round(stats.cost_usd, 6), "wall_seconds": round(time.time() - started, 1),
            "by_model": stats.by_model,
        },
        "all_invocations": store.call_totals() | {"wall_seconds": round(
            store.get_meta("wall_seconds", 0.0) + time.time() - started, 1)},
        "offline_roles": ctx.config.roles.offline_models(),
        **extra,
    }
    store.set_meta("wall_seconds", summary["all_invocations"]["wall_seconds"])
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def _given_up(ctx: RunContext) -> dict[str, str]:
    """Domains whose quota is unmet because the target resisted ``domain_patience`` attacked seeds."""
    patience = ctx.config.pipeline.domain_patience
    if not patience:
        return {}
    attacked = ctx.store.group_count("seeds", "domain", "stage != 'seed'")
    accepted = ctx.store.group_count("triplets", "domain", "status = 'accepted'")
    return {d: f"no accepted triplet after {attacked.get(d, 0)} attacked seeds (domain_patience {patience})"
            for d in domain_quotas(ctx) if attacked.get(d, 0) >= patience and not accepted.get(d)}


def prepare_run(config: RunConfig, *, resume: str | None = None, run_id: str | None = None) -> tuple[Path, RunConfig]:
    """The run folder and the config to use: a resumed run uses the config it was started with
    (the caller may still change the time budget, ``pipeline.max_minutes``)."""
    if resume:
        run_dir = Path(resume) if Path(resume).is_dir() else config.runs_dir / resume
        stored = run_dir / "config.yaml"
        if not stored.is_file():
            raise CoherenceError(f"{run_dir}: no such run (fix: give a folder under {config.runs_dir}/ "
                                 f"or an id printed by an earlier `coherence run`)")
        data = yaml.safe_load(stored.read_text(encoding="utf-8"))
        config = RunConfig.model_validate({**data, "runs_dir": str(run_dir.parent)})
        return run_dir, config
    pack = load_pack(config.pack)
    run_dir = config.runs_dir / (run_id or run_id_for(config, pack.digest))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(config.model_dump(mode="json", exclude={"runs_dir"}), allow_unicode=True, sort_keys=False))
    return run_dir, config


async def run_async(config: RunConfig, run_dir: Path, *, advance: Advance | None = None) -> dict[str, Any]:
    """Run (or resume) the pipeline into ``run_dir`` and export it. Returns the summary."""
    started = time.time()
    pack = load_pack(config.pack)
    store = Store(run_dir / "run.db")
    try:
        known = store.get_meta("pack_digest")
        if known and known != pack.digest:
            raise CoherenceError(f"{run_dir}: the pack {pack.ref} changed since this run started "
                                 f"(fix: start a new run; a run's triplets must come from one pack version)")
        store.set_meta("pack_digest", pack.digest)
        store.set_meta("pack", pack.ref)
        pool = ModelPool(store, pack)
        budget = config.pipeline.max_minutes
        ctx = RunContext(store=store, pack=pack, config=config, pool=pool,
                         advance=advance or (lambda stage, n: None),
                         deadline=time.monotonic() + 60 * budget if budget else None)
        try:
            await run_stages_async(ctx)
        except BaseException:
            write_summary(run_dir, ctx, started, {"status": "interrupted"})
            raise
        finally:
            await pool.aclose()
        exported = export_run(store, pack, run_dir)
        status = "finished"
        if store.count("seeds", "status IN ('active', 'jailbroken', 'responded') AND wave IS NOT NULL"):
            status = "time_budget"
        return write_summary(run_dir, ctx, started, {"status": status, "exports": exported})
    finally:
        store.close()
