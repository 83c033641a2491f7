"""Run stages A-D over a pack with a progress bar per stage; resumable from the run store.

Stage A fills seeds in seed order, as a stream beside the other stages (:class:`SeedStream`). In
waves, seeds of the domains that still lack accepted triplets are attacked (B), answered (C) and
filtered (D), until every domain has its quota or the seeds run out. Every seed flows through B -> C -> D on its own as soon as it is ready, and the next
wave starts before the current one has finished (:class:`Waves`), so every model is kept busy up to
its concurrency; the decisions that depend on order (the least-used generator, domain quotas) are
committed in seed order through :class:`Turns`. A killed
run resumes where it stopped: finished items are read from the store and finished model calls from
its cache, and it ends exactly (bit for bit) as an uninterrupted run would when every provider
answers a call the same way each time (offline roles, ``mock:``, the fake servers). The calls in
flight at the kill are asked again: with batched local decoding (``local:``, whose answer depends on
the batch it lands in) or a remote LLM the new answer can differ, and the run goes on from it with
the same decisions it would take on those answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from coherence.config import ModelSpec, RunConfig
from coherence.errors import CoherenceError
from coherence.export import export_run
from coherence.models import BudgetReached, ModelPool
from coherence.models.calls import CALL_GATE, PRIORITY
from coherence.packs.loader import load_pack
from coherence.paths import check_output, mark, safe_name
from coherence.pipeline.attack import attack_seed
from coherence.pipeline.context import Advance, Halted, RunContext, Turns, first_error
from coherence.pipeline.filter import commit_triplet, domain_quotas, judge_triplet, remaining, stored_choice
from coherence.pipeline.respond import commit_response, gather_candidates, generator_order, unique_best
from coherence.pipeline.seed import SeedStream
from coherence.store import Store

MAX_WAVE_PER_DOMAIN = 48


def run_id_for(config: RunConfig, pack_digest: str, *, pack_name: str | None = None) -> str:
    """Same config and same pack give the same run id, so running again resumes (zero new calls).
    The pack counts by its resolved identity (``pack_name``, its ``pack.yaml`` name, and its digest),
    so ``ko-KR`` and ``packs/ko-KR`` are one run.

    What only changes how calls are made or priced (concurrency, rate limits, timeouts, retries,
    prices, key variables: :attr:`ModelSpec.OPERATIONAL`) and the time budget (``max_minutes``,
    ``finish_started_seeds``) are left out, so a run
    can be continued with a lower concurrency or a new price."""
    data = config.model_dump(mode="json", exclude={"runs_dir": True, "pipeline": {"max_minutes", "finish_started_seeds"}})
    if pack_name is not None:
        data["pack"] = pack_name
    for spec in data["roles"].values():
        for one in spec if isinstance(spec, list) else [spec]:
            for key in ModelSpec.OPERATIONAL:
                one.pop(key, None)
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False) + pack_digest
    name = pack_name or Path(config.pack).name
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


OPEN = ("active", "jailbroken", "responded")
"""Seed statuses that still have work to do."""


async def _wave(ctx: RunContext, closed: int, seeds: SeedStream) -> list[dict[str, Any]] | None:
    """Next seeds to attack: per open domain, enough to fill its quota at the yield seen so far,
    counting the seeds of the waves still open (after wave ``closed``) as yielding at that rate too.
    None if stage A stopped (time or cost budget) before it wrote the seeds the wave needs.

    Reads only what is fixed when wave ``closed`` has committed its last seed (accepted triplets, wave
    membership), never how far the open waves or stage A have got, so a resumed run chooses the same
    seeds.
    """
    store = ctx.store
    left = remaining(ctx)
    seen = store.group_count("seeds", "domain", "wave <= ?", closed)
    in_flight = store.group_count("seeds", "domain", "wave > ?", closed)
    accepted = store.group_count("triplets", "domain", "status = 'accepted'")
    wave = []
    patience = ctx.config.pipeline.domain_patience
    for domain, need in left.items():
        done, going = seen.get(domain, 0), in_flight.get(domain, 0)
        if need <= 0 or (patience and done >= patience and not accepted.get(domain)):
            continue
        rate = max(accepted.get(domain, 0) / done, 0.1) if done >= 8 else 0.5
        need -= going * rate
        if need <= 0:
            continue
        take = min(MAX_WAVE_PER_DOMAIN, max(4, math.ceil(need / rate)))
        if patience and not accepted.get(domain):
            take = min(take, patience - done - going)
        if take > 0:
            rows = await seeds.take(domain, take)
            if rows is None:
                return None
            wave += rows
    return sorted(wave, key=lambda s: s["ord"])


async def run_stages_async(ctx: RunContext) -> SeedStream:
    """Stages A-D: stage A as a stream (:class:`SeedStream`) beside waves of B -> C -> D, until every
    domain has its quota or no seed is left (see :class:`Waves`). Returns the stream (it says whether
    stage A stopped on the time or cost budget)."""
    seeds = SeedStream(ctx)

    async def waves() -> None:
        await Waves(ctx, seeds).run()
        seeds.close()

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(seeds.run())
            group.create_task(waves())
    except BaseExceptionGroup as eg:
        raise first_error(eg) from None
    return seeds


class Waves:
    """Waves of seeds through B -> C -> D, up to ``pipeline.open_waves`` of them in flight.

    Every seed flows on its own as soon as it is ready, its calls ranked by its wave and its block in
    the wave (an earlier wave's calls first, then an earlier block's; within a block, first come, first
    served: :data:`coherence.models.calls.PRIORITY`). The decisions that depend on order (the least-used generator, the domain quotas)
    are committed in one sequence across the waves (:class:`Turns`). When a wave's last seed has
    committed, the waves are topped up (:func:`_wave`), before any later seed commits; which top-ups
    were done is kept in the store (``topped_up``). So a run killed at any point resumes (with
deterministic providers; see the module docstring) to exactly
    the uninterrupted result.
    """

    def __init__(self, ctx: RunContext, seeds: SeedStream) -> None:
        self.ctx, self.seeds = ctx, seeds
        self.respond, self.filter = Turns(), Turns()
        self.usage, self.left, self.order = ctx.store.chosen_slot_counts(), remaining(ctx), generator_order(ctx)
        self.last: dict[int, int] = {}
        """Position of each wave's last seed -> the wave's number."""
        self.group: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        store = self.ctx.store
        open_waves = store.open_waves(OPEN)
        closed = open_waves[0] - 1 if open_waves else store.get_meta("wave", 0)
        for number in range(store.get_meta("topped_up", -1) + 1, closed + 1):
            # owed if a kill came between a wave's last commit and its top-up
            if not await self._top_up(number):
                return  # stage A stopped first: no later seed may commit before this top-up is done
        try:
            async with asyncio.TaskGroup() as self.group:
                for number in store.open_waves(OPEN):
                    self._append(number)
        except BaseExceptionGroup as eg:  # the first failure, as itself (like context.gather)
            raise first_error(eg) from None

    async def _top_up(self, closed: int) -> bool:
        """Open waves after wave ``closed`` committed its last seed (0: at the start), up to ``open_waves``
        in flight; once per wave. Waits for stage A to write the seeds. False if stage A stopped first
        (time or cost budget): the top-up is owed to the next invocation, and no later seed may commit
        before it (it reads the quotas as they were when wave ``closed`` committed)."""
        store = self.ctx.store
        if self.filter.halted and self.ctx.finishing_since is None:
            return False
        # finishing before the time budget (a later seed was not started): the top-up is still done, so the
        # seeds of the open waves before that seed can commit; the new waves' seeds will not start
        while store.get_meta("wave", 0) - closed < self.ctx.config.pipeline.open_waves:
            wave = await _wave(self.ctx, closed, self.seeds)
            if wave is None:
                return False
            if not wave:
                break
            number = store.start_wave([s["id"] for s in wave])
            if self.group is not None:
                self._append(number)
        store.set_meta("topped_up", max(closed, store.get_meta("topped_up", -1)))
        return True

    def _append(self, number: int) -> None:
        assert self.group is not None
        members = self.ctx.store.seeds(wave=number)
        base = len(self.filter)
        self.respond.extend(len(members))
        self.filter.extend(len(members))
        self.last[base + len(members) - 1] = number
        block = max(1, self.ctx.config.roles.target.max_concurrency)
        for k, seed in enumerate(members):
            self.group.create_task(self._flow(base + k, seed, (number, k // block)))

    async def _flow(self, i: int, seed: dict[str, Any], priority: tuple[int, int]) -> None:
        # this task's calls (and its children's) wait behind earlier waves' calls and, within the wave,
        # behind the earlier blocks' (see coherence.models.calls.PRIORITY)
        PRIORITY.set(priority)
        CALL_GATE.set(lambda role: self._gate(i, seed["id"], role))
        try:
            await _seed_flow(self.ctx, i, seed, respond_turns=self.respond, filter_turns=self.filter,
                             usage=self.usage, left=self.left, order=self.order, on_commit=self._committed)
        except (Halted, BudgetReached):
            self.respond.halt(i)
            self.filter.halt(i)
        except BaseException:
            # release every later seed waiting for its turn: a failure or a kill must not leave one
            # waiting (Python 3.11's TaskGroup can swallow the cancellation of a task in a nested group)
            self.respond.halt(i)
            self.filter.halt(i)
            raise

    def _gate(self, i: int, seed_id: str, role: str) -> str | None:
        """Why seed ``i`` should not make the call that just got its slot, near the time budget: a seed
        that has not made its first attack attempt starts only if it can finish in time
        (:meth:`RunContext.may_start_seed`), and once one did not, the seeds after it (which cannot commit
        before the next invocation) make no call."""
        if self.ctx.finishing_since is not None and i > min(self.respond.stop, self.filter.stop):
            return "finishing before the time budget: an earlier seed stopped, so this one cannot commit now"
        if (role in ("attacker", "target") and seed_id not in self.ctx.starting  # let start: not stopped midway
                and not self.ctx.store.count("attempts", "seed_id = ?", seed_id)
                and not self.ctx.may_start_seed(seed_id)):
            return "finishing before the time budget: no new seed starts its attack"
        return None

    async def _committed(self, i: int) -> None:
        """Seed ``i`` has its final decision (and holds the turn): top up if it closed a wave."""
        if i in self.last and not await self._top_up(self.last.pop(i)):
            raise Halted(i)  # its own triplet is committed; the seeds after it wait for the owed top-up


async def _seed_flow(ctx: RunContext, i: int, seed: dict[str, Any], *, respond_turns: Turns, filter_turns: Turns,
                     usage: dict[str, int], left: dict[str, int], order: list[str],
                     on_commit: Callable[[int], Awaitable[None]]) -> None:
    """One seed from wherever the store says it is to its end, committing at its turns."""
    store = ctx.store
    if seed["status"] == "active":
        await attack_seed(ctx, seed)
        seed = store.seed(seed["id"])
        if seed["status"] == "active":
            raise Halted(i)  # out of time mid-attack: this seed and the ones after it wait for the next run
    chosen: dict[str, Any] | None = None
    judged: tuple[dict[str, Any], list[Any]] | None = None
    if seed["status"] == "jailbroken":
        qv, candidates = await gather_candidates(ctx, seed)
        early = unique_best(candidates)
        judging = None
        if early is not None:  # the winner does not depend on the turn: stage D starts now
            text = next(c["text"] for c in candidates if c["slot"] == early)
            judging = asyncio.ensure_future(judge_triplet(ctx, seed, text))
        try:
            await respond_turns.turn(i)
            chosen = commit_response(ctx, seed, qv, candidates, usage=usage, order=order)
            respond_turns.done(i)
            if chosen is not None:
                judged = await judging if judging is not None else await judge_triplet(ctx, seed, chosen["text"])
        except BaseException:
            if judging is not None:
                judging.cancel()
                await asyncio.gather(judging, return_exceptions=True)
            raise
    else:
        await respond_turns.turn(i)
        respond_turns.done(i)
        if seed["status"] == "responded":
            chosen = stored_choice(ctx, seed["id"])
            judged = await judge_triplet(ctx, seed, chosen["text"])
    await filter_turns.turn(i)
    if chosen is not None and judged is not None:
        commit_triplet(ctx, seed, judged[0], chosen, judged[1], left=left)
    await on_commit(i)
    filter_turns.done(i)


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
        "jailbroken": store.count("seeds", "status NOT IN ('active','duplicate','empty','no_jailbreak') AND NOT "
                                           "(status = 'provider_refused' AND stage IN ('seed', 'attack'))"),
        "no_jailbreak": status.get("no_jailbreak", 0),
        "query_rejected": status.get("query_rejected", 0),
        "responded": store.count("seeds", "stage = 'filter'"),
        "accepted": status.get("accepted", 0),
        "filter_rejected": status.get("rejected", 0),
        "over_quota": status.get("over_quota", 0),
        "not_attacked": status.get("active", 0),
        "provider_refused": store.refused_seeds(),
    }


def accepted_so_far(run_dir: Path) -> int:
    """Triplets accepted in ``run_dir`` so far, from its store (what an interrupted run has kept)."""
    if not (run_dir / "run.db").is_file():
        return 0
    store = Store(run_dir / "run.db")
    try:
        return store.count("seeds", "status = 'accepted'")
    finally:
        store.close()


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
            "by_model": stats.by_model, "refused": stats.refused,
        },
        "all_invocations": store.call_totals() | {"wall_seconds": round(
            store.get_meta("wall_seconds", 0.0) + time.time() - started, 1)},
        "provider_refusals": {
            "by_slot": store.refusal_counts(),
            "seeds_stopped": store.refused_seeds(),
            "note": "refused prompts are not sent again on resume; `coherence run --resume <id> --retry-refused` "
                    "sends them again",
        },
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
    if run_id is not None:
        safe_name(run_id, what="--run-id", fix=f"give a plain name; runs are created under {config.runs_dir}/, "
                                                "use --runs-dir for another parent")
    run_dir = config.runs_dir / (run_id or run_id_for(config, pack.digest, pack_name=pack.meta.name))
    check_output(run_dir, "run", what="--run-id" if run_id else "run folder")
    mark(run_dir, "run")
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(config.model_dump(mode="json", exclude={"runs_dir"}), allow_unicode=True, sort_keys=False))
    return run_dir, config


async def run_async(config: RunConfig, run_dir: Path, *, advance: Advance | None = None,
                    max_cost: float | None = None, on_spend: Callable[[float], None] | None = None,
                    retry_refused: bool = False, exclude_rejected: bool = False) -> dict[str, Any]:
    """Run (or resume) the pipeline into ``run_dir`` and export it. Returns the summary.

    Args:
        config: the run's config.
        run_dir: its folder (from :func:`prepare_run`).
        advance: progress callback ``advance(stage, n)``.
        max_cost: USD the whole run (every invocation together) may spend; the run stops cleanly
            (status ``cost_budget``) before a call would exceed it. None: no limit.
        on_spend: called with the run's total USD after every paid call (for a progress display).
        retry_refused: send again the prompts a provider refused in an earlier invocation, and reopen
            the seeds those refusals stopped in stages B and C (slot-filler refusals stay as they are).
        exclude_rejected: the export leaves out triplets human reviewers rejected (``coherence review``).
    """
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
        minutes = config.pipeline.max_minutes
        if retry_refused:
            store.reopen_refused()
        pool = ModelPool(store, pack, max_cost=max_cost, on_spend=on_spend, specs=config.roles.specs(),
                         retry_refused=retry_refused, deadline=time.monotonic() + 60 * minutes if minutes else None)
        ctx = RunContext(store=store, pack=pack, config=config, pool=pool,
                         advance=advance or (lambda stage, n: None))
        try:
            seeds = await run_stages_async(ctx)
        except BaseException:
            write_summary(run_dir, ctx, started, {"status": "interrupted"})
            raise
        finally:
            await pool.aclose()
        exported = export_run(store, pack, run_dir, exclude_rejected=exclude_rejected)
        status = "finished"
        extra: dict[str, Any] = {}
        if pool.stats.cost_stopped:
            status = "cost_budget"
            extra["cost_budget"] = {"max_cost_usd": max_cost, "spent_usd": round(pool.budget.spent(), 6),
                                    "why": pool.stats.cost_stopped,
                                    "resume": f"coherence run --resume {run_dir.name} --max-cost <higher USD>"}
        elif seeds.stopped == "time" or store.count(
                "seeds", "status IN ('active', 'jailbroken', 'responded') AND wave IS NOT NULL"):
            status = "time_budget"
        if ctx.finishing_since is not None:
            extra["finishing"] = {"seconds_before_deadline": ctx.finishing_since,
                                  "why": "no seed started its attack from then on, so the seeds under attack "
                                         "could finish and commit; the next invocation starts the others"}
        return write_summary(run_dir, ctx, started, {"status": status, "exports": exported, **extra})
    finally:
        store.close()
