"""The choke point every model call goes through: cache, concurrency, rate, retries, accounting."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from coherence.config import ModelSpec
from coherence.errors import FatalProviderError, ModelError
from coherence.models.base import ChatAPI, Message, ModelOutput, TransientError
from coherence.store import Store

log = logging.getLogger(__name__)


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
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)

    def bump(self, model: str, what: str) -> None:
        self.by_model.setdefault(model, {"made": 0, "cached": 0})
        self.by_model[model][what] = self.by_model[model].get(what, 0) + 1


class _RateLimiter:
    """Starts at most ``rpm`` requests per minute, evenly spaced."""

    def __init__(self, rpm: int | None) -> None:
        self.interval = 60.0 / rpm if rpm else 0.0
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            delay = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


class Model:
    """A provider wrapped with the run's cache, a concurrency bound, a rate limit and retries."""

    def __init__(self, spec: ModelSpec, api: ChatAPI, store: Store, stats: CallStats) -> None:
        self.spec, self.api, self.store, self.stats = spec, api, store, stats
        self.name = spec.model
        self._sem = asyncio.Semaphore(spec.max_concurrency)
        self._rate = _RateLimiter(spec.rpm)

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
        if hit is not None:
            self.stats.cached += 1
            self.stats.bump(self.name, "cached")
            data = json.loads(hit["response"])
            return ModelOutput(text=data["text"], input_tokens=hit["input_tokens"],
                               output_tokens=hit["output_tokens"], cost=hit["cost"],
                               offline=data.get("offline", False), extra=data.get("extra", {}))
        if self.stats.fatal:
            raise FatalProviderError(self.stats.fatal)
        attempt = 0
        while True:
            attempt += 1
            await self._rate.wait()
            async with self._sem:
                started = time.monotonic()
                try:
                    out = await asyncio.wait_for(
                        self.api.generate_async(messages=messages, params=merged, task=task),
                        timeout=self.spec.timeout)
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
                    backoff = retry_after if retry_after is not None else min(30.0, 0.5 * 2 ** (attempt - 1))
                    log.debug("retrying %s after %s (%.1fs)", self.name, kind, backoff)
                    await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
                    continue
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
                latency = time.monotonic() - started
            break
        self.stats.made += 1
        self.stats.bump(self.name, "made")
        self.stats.input_tokens += out.input_tokens or 0
        self.stats.output_tokens += out.output_tokens or 0
        self.stats.cost_usd += out.cost or 0.0
        self.store.record_call(
            key=key, model=self.name, role=role, request={"messages": messages, "params": merged, "task": task},
            response=json.dumps({"text": out.text, "offline": out.offline, "extra": out.extra}, ensure_ascii=False),
            input_tokens=out.input_tokens, output_tokens=out.output_tokens, cost=out.cost, latency=latency)
        return out
