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
    awaitable of the text), in the current :func:`coherence.models.mock.script_scope`."""
    from coherence.models import mock

    mock.scripts()[name] = reply


def endpoint(spec: ModelSpec) -> str:
    """The key of a spec's concurrency and rate bound: its ``limit_group`` when it names one, else its
    provider endpoint (model + ``api_base``): every role on one endpoint shares one bound."""
    return f"group:{spec.limit_group}" if spec.limit_group else f"endpoint:{spec.model}|{spec.api_base or ''}"


def shared_bounds(specs: list[ModelSpec]) -> dict[str, ModelSpec]:
    """Endpoint (:func:`endpoint`) -> the spec whose ``max_concurrency``/``rpm``/``tpm`` bound it: per
    field the tightest value any member sets explicitly, else the default (so a role that leaves a
    field unset never loosens or tightens another role's bound on the same endpoint)."""
    members: dict[str, list[ModelSpec]] = {}
    for spec in specs:
        members.setdefault(endpoint(spec), []).append(spec)
    out: dict[str, ModelSpec] = {}
    for key, group in members.items():
        values: dict[str, Any] = {}
        for name in ("max_concurrency", "rpm", "tpm"):
            explicit = [getattr(s, name) for s in group if name in s.model_fields_set and getattr(s, name)]
            values[name] = min(explicit) if explicit else getattr(group[0], name)
        out[key] = group[0].model_copy(update=values)
    return out


class ModelPool:
    """The run's models: one :class:`Model` per distinct spec (its params and cache identity), and one
    concurrency and rate bound per provider endpoint (model + ``api_base``, or a ``limit_group``)
    shared by every role on it.

    Args:
        specs: every spec the run will use (``Roles.specs()``), so an endpoint's bound is known before
            its first call (:func:`shared_bounds`); None: an endpoint takes its first spec's bound.
        retry_refused: send again the calls a provider refused in an earlier invocation.
    """

    def __init__(self, store: Store, pack: Pack | None, *, max_cost: float | None = None,
                 on_spend: Callable[[float], None] | None = None, deadline: float | None = None,
                 specs: list[ModelSpec] | None = None, retry_refused: bool = False) -> None:
        self.store, self.pack, self.retry_refused = store, pack, retry_refused
        self.stats = CallStats()
        self.budget = Budget(max_cost, store.call_totals()["cost_usd"], on_spend, deadline)
        self._models: dict[str, Model] = {}
        self._bounds = shared_bounds(specs or [])
        self._groups: dict[str, Limits] = {}

    def get(self, spec: ModelSpec) -> Model:
        key = spec.model_dump_json()
        if key not in self._models:
            where = endpoint(spec)
            limits = self._groups.get(where)
            if limits is None:
                limits = self._groups[where] = Limits(self._bounds.get(where, spec))
            self._models[key] = Model(spec, get_api(spec, self.pack), self.store, self.stats, self.budget, limits,
                                      retry_refused=self.retry_refused)
        return self._models[key]

    def limits(self, spec: ModelSpec) -> Limits:
        """The bound a spec's calls share (for tests and diagnostics)."""
        self.get(spec)
        return self._groups[endpoint(spec)]

    def in_flight(self) -> int:
        """Requests being served right now, over every model."""
        return sum(m.in_flight for m in self._models.values())

    async def aclose(self) -> None:
        for model in self._models.values():
            close = getattr(model.api, "aclose", None)
            if close is not None:
                await close()
