"""What every stage receives: the run's store, pack, config, models and judges."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from coherence.config import RunConfig, slot_name
from coherence.judges import Judge, make_judge
from coherence.models import Model, ModelPool
from coherence.packs.loader import Pack
from coherence.store import Store

T = TypeVar("T")

Advance = Callable[[str, int], None]
"""``advance(stage, n)``: progress callback (the runner draws bars with it)."""


@dataclass
class RunContext:
    store: Store
    pack: Pack
    config: RunConfig
    pool: ModelPool
    advance: Advance = field(default=lambda stage, n: None)

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
