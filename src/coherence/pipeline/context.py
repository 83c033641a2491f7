"""What every stage receives: the run's store, pack, config, models and judges."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from coherence.config import RunConfig, slot_name
from coherence.judges import Judge, make_judge
from coherence.models import Model, ModelPool
from coherence.packs.loader import Pack
from coherence.store import Store

T = TypeVar("T")

log = logging.getLogger(__name__)

Advance = Callable[[str, int], None]
"""``advance(stage, n)``: progress callback (the runner draws bars with it)."""


@dataclass
class RunContext:
    store: Store
    pack: Pack
    config: RunConfig
    pool: ModelPool
    advance: Advance = field(default=lambda stage, n: None)
    target_latency: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    """Seconds from slot to answer of this invocation's recent target calls in stage B."""
    target_done: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    """``time.monotonic()`` when each of those calls was answered."""
    starting: set[str] = field(default_factory=set)
    """Seeds let start near the deadline (:meth:`may_start_seed`) whose first attempt is not stored yet."""
    finishing_since: float | None = None
    """Seconds before the deadline at which a seed was first not started (:meth:`may_start_seed`)."""

    def note_target_call(self, latency: float) -> None:
        """Stage B made a target call (not from the cache) that took ``latency`` s from slot to answer."""
        self.target_latency.append(latency)
        self.target_done.append(time.monotonic())

    def may_start_seed(self, seed_id: str) -> bool:
        """Whether seed ``seed_id`` may make its first attack attempt now: with a time budget, only if
        the seeds under attack and it can make all their remaining attempts before the deadline.

        They need ``remaining attempts / target calls answered per second`` (over the last minute or
        four latencies), plus two target latencies for the last, partly filled rounds, and at least
        ``max_attempts`` latencies (one seed's attempts wait for each other). Every seed let start whose
        first attempt is not stored yet counts ``max_attempts``. (``pipeline.finish_started_seeds``;
        the runner's call gate.) The first no is kept in :attr:`finishing_since` and logged."""
        deadline, pipeline = self.pool.budget.deadline, self.config.pipeline
        if deadline is None or not self.target_latency or not pipeline.finish_started_seeds:
            return True
        latency = sum(self.target_latency) / len(self.target_latency)
        now = time.monotonic()
        left = deadline - now
        if left > 3 * pipeline.max_attempts * latency:
            return True  # far from the deadline: no need to count
        window = max(60.0, 4 * latency)
        span = min(window, now - self.target_done[0])
        answered = sum(1 for t in self.target_done if t >= now - window)
        if span <= 0 or not answered:
            return True
        self.starting = {s for s in self.starting if not self.store.count("attempts", "seed_id = ?", s)}
        remaining = (self.store.remaining_attempts(pipeline.max_attempts)
                     + pipeline.max_attempts * len(self.starting | {seed_id}))
        needed = max(pipeline.max_attempts * latency, remaining * span / answered + 2 * latency)
        if left >= needed:
            self.starting.add(seed_id)
            return True
        if self.finishing_since is None:
            self.finishing_since = round(left, 1)
            log.info("time budget: %.0f s left; the seeds under attack need about %.0f s (%d attempts at %.2f "
                     "a second): no new seed starts (the next invocation starts them)", left, needed, remaining,
                     answered / span)
        return False

    def out_of_time(self) -> bool:
        """The time budget (the pool's deadline) has passed: no new attack attempt or seed fill starts
        (and the pool's models make no call still waiting for its slot)."""
        return self.pool.budget.out_of_time()

    def model(self, role: str, index: int | None = None) -> Model:
        spec = getattr(self.config.roles, role)
        return self.pool.get(spec[index] if index is not None else spec)

    def judge(self, role: str, index: int | None = None) -> Judge:
        spec = getattr(self.config.roles, role)
        spec = spec[index] if index is not None else spec
        return make_judge(spec, pool=self.pool, pack=self.pack, role=slot_name(role, index))



async def gather(*aws: Awaitable[T]) -> list[T]:
    """Like ``asyncio.gather`` but the first failure cancels the siblings and is raised as itself
    (a fatal provider error stops the run at once instead of after every queued call)."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(a) for a in aws]  # type: ignore[arg-type]
    except BaseExceptionGroup as eg:
        raise first_error(eg) from None
    return [t.result() for t in tasks]


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The first exception of a task group's failure (the one that cancelled its siblings)."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


class Halted(Exception):
    """Raised to an item whose turn will not come: an earlier item stopped (time or cost budget)."""


class Turns:
    """An ordered commit sequencer: item ``i`` commits only after items ``0..i-1`` have.

    Model calls run eagerly and concurrently; only the decisions that depend on order (tie-breaks on
    usage so far, domain quotas) wait for their turn. If item ``i`` stops early (:meth:`halt`), no item
    after it commits, so what is in the store is always a prefix in seed order and a resumed run takes
    exactly the decisions an uninterrupted one would. Items can be appended while it runs
    (:meth:`extend`): the next wave joins the queue behind the current one.
    """

    def __init__(self, n: int = 0) -> None:
        self._ready: dict[int, asyncio.Event] = {0: asyncio.Event()}
        """Events of the items whose turn has not passed yet (memory stays flat over a long run)."""
        self._ready[0].set()
        self._size = 0
        self.stop: float = math.inf
        """Index of the first item that halted (no item from here on commits)."""
        self.extend(n)

    def __len__(self) -> int:
        return self._size

    def extend(self, n: int) -> None:
        """Append ``n`` items (released at once if an earlier item halted)."""
        for _ in range(n):
            self._size += 1
            event = self._ready[self._size] = asyncio.Event()
            if self.halted:
                event.set()

    async def turn(self, i: int) -> None:
        """Wait until items before ``i`` are done. Raises :class:`Halted` if an earlier item halted."""
        await self._ready[i].wait()
        del self._ready[i]
        if i >= self.stop:
            raise Halted(i)

    def done(self, i: int) -> None:
        """Item ``i`` committed (or had nothing to commit): the next one may go."""
        self._ready[i + 1].set()

    def halt(self, i: int) -> None:
        """Item ``i`` will not commit: items before it still may, items after it are released and halt."""
        self.stop = min(self.stop, i)
        for j, event in self._ready.items():
            if j > i:
                event.set()

    @property
    def halted(self) -> bool:
        return self.stop != math.inf
