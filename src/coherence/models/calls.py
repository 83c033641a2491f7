"""The choke point every model call goes through: cache, concurrency, rate, retries, accounting, budget.

Order of one call: cache lookup (a hit costs nothing), then the cost budget (``--max-cost``: a call
whose estimated price would take the run over the limit is not made, and no later one is), then
``rpm``/``tpm`` pacing, then the concurrency slot, then the time budget (``--max-minutes``: a call that
gets its slot after the deadline is not made, so a stop waits only for the calls already at the
provider), then the provider. A transient failure (429, 5xx,
timeout, dropped connection) gives its slot back while it waits (``Retry-After`` when the provider
sends one, else exponential backoff with jitter) and is retried; a refusal of this one prompt
(content policy, invalid prompt, context length) is recorded in the cache with its class and
returned to the stage (never retried, and not sent again on resume unless ``retry_refused``); a
fatal one (bad key, unknown model, exhausted quota) stops every later call of the run at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import heapq
import itertools
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from collections.abc import Callable

from coherence.config import ModelSpec
from coherence.errors import FatalProviderError, ModelError
from coherence.models.base import ChatAPI, Message, ModelOutput, TransientError
from coherence.store import Store

log = logging.getLogger(__name__)

BYTES_PER_TOKEN = 3.0
"""Prompt-size estimate used before a call (budget, tpm): UTF-8 bytes / 3, on the safe side for both
English (~4 characters a token) and Korean (3 bytes a syllable, about one token each); the recorded
figures are the provider's."""
TPM_COMPLETION_TOKENS = 512
"""Completion length ``tpm`` pacing assumes for a role without ``max_tokens``."""
UNKNOWN_COMPLETION_TOKENS = 32_768
"""Completion bound assumed for the budget and tpm when a role sets no ``max_tokens`` and LiteLLM's
model info gives no maximum output for its model (named once in a warning)."""


def estimate_tokens(text: str) -> float:
    """Tokens of a text before a call: UTF-8 bytes / 3 (see :data:`BYTES_PER_TOKEN`). The one estimator
    of the cost limit, the tpm pacing and ``--dry-run``."""
    return len(text.encode()) / BYTES_PER_TOKEN


_unbounded: set[str] = set()


def completion_bound(spec: ModelSpec, params: dict[str, Any] | None = None, *, warn: bool = False) -> float:
    """The most output tokens one call of ``spec`` may produce: its ``max_tokens`` (``params`` first,
    then the spec's), else the model's maximum output from LiteLLM's model info (reasoning included),
    else :data:`UNKNOWN_COMPLETION_TOKENS` (named once in a warning when ``warn``: a priced model under
    ``--max-cost``). What ``--max-cost`` reserves before the call."""
    from coherence.models.remote import max_output_tokens

    given = (params or {}).get("max_tokens") or spec.params.get("max_tokens")
    if given:
        return float(given)
    known = max_output_tokens(spec.model)
    if known:
        return float(known)
    if warn and spec.model not in _unbounded:
        _unbounded.add(spec.model)
        log.warning("%s: no max_tokens and no known maximum output, so --max-cost reserves %d output tokens "
                    "per call (fix: give its role `params: {max_tokens: N}`)", spec.model, UNKNOWN_COMPLETION_TOKENS)
    return float(UNKNOWN_COMPLETION_TOKENS)


class BudgetReached(ModelError):
    """A run limit stops the run cleanly before the next call; the run is resumable."""

    limit = "budget"
    """Which limit: ``cost`` or ``time``."""


class CostLimitReached(BudgetReached):
    """The next call would take the run over ``--max-cost``."""

    limit = "cost"


class TimeLimitReached(BudgetReached):
    """The invocation's time budget (``--max-minutes``) passed before the next call got to the provider."""

    limit = "time"


def call_key(model: str, messages: list[Message], params: dict[str, Any], task: dict[str, Any]) -> str:
    """Content hash of a call (algorithm-tagged). Operational knobs (concurrency, rpm, retries) are
    not part of it, so changing them never invalidates the cache."""
    blob = json.dumps({"model": model, "messages": messages, "params": params, "task": task},
                      sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class CallStats:
    """Counts for one invocation of a run (a resumed run starts from zero)."""

    made: int = 0
    cached: int = 0
    retries: int = 0
    failed: int = 0
    fatal: str | None = None
    """Set by the first fatal provider error: later calls fail fast instead of reaching the provider."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_stopped: str | None = None
    """Set when the cost budget stopped the run (why); later calls are not made."""
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    refused: dict[str, dict[str, int]] = field(default_factory=dict)
    """Role slot -> refusal class -> refusals the provider gave in this invocation."""

    def bump(self, model: str, what: str) -> None:
        self.by_model.setdefault(model, {"made": 0, "cached": 0})
        self.by_model[model][what] = self.by_model[model].get(what, 0) + 1


class _RateLimiter:
    """Paces starts to at most ``per_minute`` units a minute (requests for rpm, tokens for tpm),
    evenly spaced; one call of ``units`` reserves ``units / per_minute`` minutes."""

    def __init__(self, per_minute: int | None) -> None:
        self.per_minute = per_minute
        self.next_at = 0.0

    async def wait(self, units: float = 1.0) -> None:
        if not self.per_minute:
            return
        now = time.monotonic()
        delay = self.next_at - now
        self.next_at = max(now, self.next_at) + 60.0 * units / self.per_minute
        if delay > 0:
            await asyncio.sleep(delay)


class Budget:
    """The run's cost limit (all invocations together), shared by every model of the run.

    Before a call its price is bounded from the prompt (:func:`estimate_tokens`) and the role's bound
    on output (:func:`completion_bound`: its ``max_tokens``, else the model's maximum output, reasoning
    included) and reserved; the call is refused if what was spent, plus what calls in flight
    reserved, plus it would exceed the limit. After the call the reservation is settled on the real
    usage the provider reports (on the reservation itself when it reports none). Calls of models
    with no known price are let through (and named once in the log): the limit cannot bound them.
    """

    def __init__(self, limit: float | None, spent_before: float,
                 on_spend: Callable[[float], None] | None = None, deadline: float | None = None) -> None:
        self.limit, self.spent_before, self.on_spend = limit, spent_before, on_spend
        self.deadline = deadline
        """``time.monotonic()`` after which no call starts (the invocation's time budget); None: none."""
        self.spent_now = 0.0
        self.reserved = 0.0
        self.unpriced: set[str] = set()

    def spent(self) -> float:
        return self.spent_before + self.spent_now

    def reserve(self, model: str, estimate: float | None) -> float:
        """Reserve ``estimate`` USD for a call, or raise :class:`CostLimitReached`."""
        if self.limit is None:
            return 0.0
        if estimate is None:
            if model not in self.unpriced:
                self.unpriced.add(model)
                log.warning("%s: no known price, so --max-cost cannot bound its calls (fix: give its role "
                            "a price, e.g. `price: {input: 3.0, output: 15.0}` in USD per million tokens)", model)
            return 0.0
        if self.spent() + self.reserved + estimate > self.limit:
            raise CostLimitReached(
                f"--max-cost {self.limit:g} USD reached: spent {self.spent():.4f} USD, calls in flight "
                f"{self.reserved:.4f} USD, the next call ({model}) ~{estimate:.4f} USD")
        self.reserved += estimate
        return estimate

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def check_time(self, model: str) -> None:
        """Raise :class:`TimeLimitReached` if the time budget has passed."""
        if self.out_of_time():
            raise TimeLimitReached(f"time budget reached before a call to {model} could start")

    def settle(self, reserved: float, cost: float | None) -> None:
        self.reserved -= reserved
        if cost:
            self.spent_now += cost
            if self.on_spend is not None:
                self.on_spend(self.spent())


CALL_GATE: contextvars.ContextVar[Callable[[str], str | None] | None] = contextvars.ContextVar(
    "coherence_call_gate", default=None)
"""Set by the runner for each seed's task: called with the call's role when a call of that task gets its
concurrency slot; a reason (not None) stops the call with :class:`TimeLimitReached` (the run finishing
before its time budget: :meth:`coherence.pipeline.runner.Waves._gate`)."""

PRIORITY: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar("coherence_call_priority",
                                                                         default=(0, 0))
"""Priority of the calls made in the current task: lower goes first when calls wait for a slot. The
runner sets it to ``(wave, block)``: the seed's wave, so the next wave's calls fill only the slots the
current wave leaves free, and the seed's block within its wave (its position // the target's
concurrency), first come, first served within a block. So a block's seeds finish and commit while the
next block takes the slots they leave free: an invocation stopped by its time budget has committed
every block it finished. (With first come, first served across a whole wave, a resumed default run
spent its 12 minutes taking 161 seeds of one wave to their 3rd attempt and committed none of them;
ranking by seed position alone made the last seeds start late and finish alone: 0.78 of ideal
against 0.88, 200 seeds, 64 slots.)"""


class _Slots:
    """A concurrency bound whose waiters are served by priority (:data:`PRIORITY`), then first come,
    first served, except that a retry goes ahead of first attempts: a call that already waited out a
    429 or 5xx does not queue twice."""

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: list[tuple[int, tuple[int, int], int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, *, retry: bool = False) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (0 if retry else 1, PRIORITY.get(), next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            *_, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # the slot goes straight to the next waiter
                return
        self.free += 1


class Limits:
    """A concurrency bound and rpm/tpm pacing: one per provider endpoint, or per ``limit_group``."""

    def __init__(self, spec: ModelSpec) -> None:
        self.max_concurrency = spec.max_concurrency
        self.sem = _Slots(spec.max_concurrency)
        self.rate = _RateLimiter(spec.rpm)
        self.tokens = _RateLimiter(spec.tpm)


class Model:
    """A provider wrapped with the run's cache, a concurrency bound, a rate limit and retries."""

    def __init__(self, spec: ModelSpec, api: ChatAPI, store: Store, stats: CallStats,
                 budget: Budget | None = None, limits: Limits | None = None, *, retry_refused: bool = False) -> None:
        self.spec, self.api, self.store, self.stats = spec, api, store, stats
        self.retry_refused = retry_refused
        """Send again the calls the provider refused in an earlier invocation (``--retry-refused``)."""
        self.budget = budget or Budget(None, 0.0)
        self.name = spec.model
        limits = limits or Limits(spec)
        self._sem, self._rate, self._tokens = limits.sem, limits.rate, limits.tokens
        self.in_flight = 0
        self._pending: dict[str, asyncio.Future[ModelOutput]] = {}
        self._retried: set[str] = set()

    def _estimate(self, messages: list[Message], params: dict[str, Any]) -> tuple[float, float]:
        prompt = sum(estimate_tokens(m.get("content") or "") for m in messages)
        warn = self.budget.limit is not None and bool(self._price(0, 1))
        return prompt, completion_bound(self.spec, params, warn=warn)

    def _price(self, prompt_tokens: float, completion_tokens: float) -> float | None:
        from coherence.models.remote import price

        return price(self.spec, prompt_tokens, completion_tokens)

    async def chat_async(self, messages: list[Message], *, role: str, task: dict[str, Any] | None = None,
                         params: dict[str, Any] | None = None) -> ModelOutput:
        """One chat call, served from the run's cache when the same call was made before.

        Args:
            messages: the conversation.
            role: the pipeline role making the call (recorded with it).
            task: structured request for pack-driven providers; part of the cache key.
            params: generation parameters on top of the spec's.

        Returns:
            The model's output.

        Raises:
            FatalProviderError: the provider refuses for a reason retries cannot fix.
            ModelError: retries were exhausted.
        """
        task = task or {}
        merged = {**self.spec.params, **(params or {})}
        key = call_key(self.name, messages, merged, task)
        hit = self.store.cached_call(key)
        if hit is not None and hit.get("refusal") and self.retry_refused and key not in self._retried:
            self._retried.add(key)  # asked again once in this invocation
            hit = None
        if hit is not None:
            self.stats.cached += 1
            self.stats.bump(self.name, "cached")
            data = json.loads(hit["response"])
            return ModelOutput(text=data["text"], input_tokens=hit["input_tokens"],
                               output_tokens=hit["output_tokens"], cost=hit["cost"],
                               offline=data.get("offline", False), extra=data.get("extra", {}),
                               refusal=hit.get("refusal"))
        pending = self._pending.get(key)
        if pending is not None:  # the same call is in flight: share its answer (what the cache would do)
            out = await asyncio.shield(pending)
            self.stats.cached += 1
            self.stats.bump(self.name, "cached")
            return ModelOutput(text=out.text, input_tokens=out.input_tokens, output_tokens=out.output_tokens,
                               cost=out.cost, offline=out.offline, extra=dict(out.extra), refusal=out.refusal)
        future: asyncio.Future[ModelOutput] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            out = await self._make(key, messages, merged, task, role=role)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody shared it
            raise
        else:
            future.set_result(out)
            return out
        finally:
            del self._pending[key]

    async def _make(self, key: str, messages: list[Message], merged: dict[str, Any], task: dict[str, Any], *,
                    role: str) -> ModelOutput:
        """A call that is not cached: budget, then the provider, then the record."""
        if self.stats.fatal:
            raise FatalProviderError(self.stats.fatal)
        if self.stats.cost_stopped:
            raise CostLimitReached(self.stats.cost_stopped)
        prompt_tokens, completion_tokens = self._estimate(messages, merged)
        try:
            reserved = self.budget.reserve(
                self.name, self._price(prompt_tokens, completion_tokens) if self.budget.limit is not None else 0.0)
        except CostLimitReached as exc:
            self.stats.cost_stopped = self.stats.cost_stopped or str(exc)
            raise
        try:
            # tpm paces on the typical length (max_tokens, or TPM_COMPLETION_TOKENS), the budget on the bound
            out, latency = await self._call_with_retries(
                key, messages, merged, task, role=role,
                tokens=prompt_tokens + float(merged.get("max_tokens") or TPM_COMPLETION_TOKENS))
        except BaseException:
            self.budget.settle(reserved, None)
            raise
        if out.cost is None and out.input_tokens is not None:
            out.cost = self._price(out.input_tokens, out.output_tokens or 0)
        elif out.cost is None and reserved and not out.refusal:
            # no usage reported: charge what was reserved (the bound), never nothing
            out.cost = reserved
            out.extra["cost_estimated"] = True
        self.budget.settle(reserved, out.cost)
        out.latency = latency
        self.stats.made += 1
        self.stats.bump(self.name, "made")
        self.stats.input_tokens += out.input_tokens or 0
        self.stats.output_tokens += out.output_tokens or 0
        self.stats.cost_usd += out.cost or 0.0
        if out.refusal:
            per_slot = self.stats.refused.setdefault(role, {})
            per_slot[out.refusal] = per_slot.get(out.refusal, 0) + 1
            log.info("%s (%s): the provider refused one prompt (%s); the item is skipped, the run goes on",
                     self.name, role, out.refusal)
        self.store.record_call(
            key=key, model=self.name, role=role, request={"messages": messages, "params": merged, "task": task},
            response=json.dumps({"text": out.text, "offline": out.offline, "extra": out.extra}, ensure_ascii=False),
            input_tokens=out.input_tokens, output_tokens=out.output_tokens, cost=out.cost, latency=latency,
            refusal=out.refusal)
        return out

    async def _call_with_retries(self, key: str, messages: list[Message], params: dict[str, Any],
                                 task: dict[str, Any], *, role: str, tokens: float) -> tuple[ModelOutput, float]:
        """The provider call, paced, bounded and retried; the slot is released while backing off."""
        attempt = 0
        while True:
            attempt += 1
            await self._rate.wait()
            await self._tokens.wait(tokens)
            backoff = None
            await self._sem.acquire(retry=attempt > 1)
            try:
                if self.stats.fatal:
                    raise FatalProviderError(self.stats.fatal)
                self.budget.check_time(self.name)  # a call that waited past the deadline is not made
                gate = CALL_GATE.get()
                why = gate(role) if gate is not None else None
                if why:  # checked when the slot is got, not when the call is queued (queues can be long)
                    raise TimeLimitReached(f"{self.name}: {why}")
                started = time.monotonic()
                self.in_flight += 1
                try:
                    # a provider that bounds its own work (a local model: the generation, not its queue)
                    out = await asyncio.wait_for(
                        self.api.generate_async(messages=messages, params=params, task=task),
                        timeout=None if getattr(self.api, "owns_timeout", False) else self.spec.timeout)
                    return out, time.monotonic() - started
                except (TransientError, asyncio.TimeoutError) as exc:
                    kind = exc.kind if isinstance(exc, TransientError) else "timeout"
                    retry_after = exc.retry_after if isinstance(exc, TransientError) else None
                    self.store.record_call_error(key=key, model=self.name, role=role, attempt=attempt,
                                                 kind=kind, message=str(exc) or kind)
                    if attempt > self.spec.max_retries:
                        self.stats.failed += 1
                        raise ModelError(f"{self.name}: gave up after {attempt} attempts ({kind}: {exc}) "
                                         f"(fix: check the server, or raise max_retries/timeout in the config; "
                                         f"the run is resumable with --resume)") from None
                    self.stats.retries += 1
                    # never sooner than the provider's Retry-After (only later, to spread the retries)
                    backoff = (retry_after * (1.0 + 0.2 * random.random()) if retry_after is not None
                               else min(30.0, 0.5 * 2 ** (attempt - 1)) * (0.8 + 0.4 * random.random()))
                    log.debug("retrying %s after %s (%.1fs)", self.name, kind, backoff)
                except FatalProviderError as exc:
                    self.store.record_call_error(key=key, model=self.name, role=role, attempt=attempt,
                                                 kind="fatal", message=str(exc))
                    self.stats.fatal = self.stats.fatal or str(exc)
                    raise
                except ModelError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a provider bug is shown to the user, not a traceback
                    self.store.record_call_error(key=key, model=self.name, role=role, attempt=attempt,
                                                 kind="error", message=f"{type(exc).__name__}: {exc}")
                    raise ModelError(f"{self.name}: {type(exc).__name__}: {exc} (the run is resumable "
                                     f"with --resume once this is fixed)") from exc
                finally:
                    self.in_flight -= 1
            finally:
                self._sem.release()
            await asyncio.sleep(backoff)
