"""One name parser and one registry of providers.

``provider:name`` specs are split at the first ``:`` (Hub names contain ``/``); a provider
registers with :func:`provider` and imports its heavy libraries lazily. Any other string is a
LiteLLM model string.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from coherence.config import ModelSpec
from coherence.errors import ModelError
from coherence.models.base import ChatAPI
from coherence.models.calls import Budget, CallStats, Limits, Model
from coherence.packs.loader import Pack
from coherence.store import Store

Factory = Callable[[str, ModelSpec, Pack | None], ChatAPI]
_PROVIDERS: dict[str, Factory] = {}
_SPEC_RE = re.compile(r"^([a-z][a-z0-9_]*):(.+)$")


def provider(prefix: str) -> Callable[[Factory], Factory]:
    """Register a factory for ``prefix:name`` specs."""

    def wrap(factory: Factory) -> Factory:
        _PROVIDERS[prefix] = factory
        return factory

    return wrap


def _ensure_builtin() -> None:
    from coherence.models import local, mock, offline  # noqa: F401  (they register themselves)


def get_api(spec: ModelSpec, pack: Pack | None = None) -> ChatAPI:
    """Build the provider for a spec."""
    _ensure_builtin()
    match = _SPEC_RE.match(spec.model)
    if match and match.group(1) in _PROVIDERS:
        return _PROVIDERS[match.group(1)](match.group(2), spec, pack)
    if match and "/" not in spec.model:
        raise ModelError(f"model {spec.model!r}: unknown provider {match.group(1)!r} "
                         f"(fix: use one of {', '.join(sorted(_PROVIDERS))} or a LiteLLM string "
                         f"such as 'openai/gpt-4.1')")
    from coherence.models.remote import make_remote

    return make_remote(spec)


def register_mock(name: str, reply: Callable[[list[dict[str, str]], dict[str, Any]], str | Awaitable[str]]) -> None:
    """Register a scripted ``mock:<name>`` model for tests: ``reply(messages, task) -> text`` (or an
    awaitable of the text)."""
    from coherence.models import mock

    mock.SCRIPTS[name] = reply


class ModelPool:
    """The run's models: one :class:`Model` per distinct spec, shared by every role that names it,
    so one concurrency bound and one rate limit hold per model."""

    def __init__(self, store: Store, pack: Pack | None, *, max_cost: float | None = None,
                 on_spend: Callable[[float], None] | None = None, deadline: float | None = None) -> None:
        self.store, self.pack = store, pack
        self.stats = CallStats()
        self.budget = Budget(max_cost, store.call_totals()["cost_usd"], on_spend, deadline)
        self._models: dict[str, Model] = {}
        self._groups: dict[str, Limits] = {}

    def get(self, spec: ModelSpec) -> Model:
        key = spec.model_dump_json()
        if key not in self._models:
            limits = None
            if spec.limit_group:
                limits = self._groups.setdefault(spec.limit_group, Limits(spec))
            self._models[key] = Model(spec, get_api(spec, self.pack), self.store, self.stats, self.budget, limits)
        return self._models[key]

    def in_flight(self) -> int:
        """Requests being served right now, over every model."""
        return sum(m.in_flight for m in self._models.values())

    async def aclose(self) -> None:
        for model in self._models.values():
            close = getattr(model.api, "aclose", None)
            if close is not None:
                await close()
