"""``mock:<name>``: scripted replies for tests (see :func:`coherence.models.register_mock`)."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from coherence.config import ModelSpec
from coherence.errors import ModelError
from coherence.models.base import Message, ModelOutput
from coherence.models.registry import provider
from coherence.packs.loader import Pack

Script = Callable[[list[Message], dict[str, Any]], str | Awaitable[str]]
"""``reply(messages, task)`` returns the text, or an awaitable of it (a script that takes its time
without blocking the event loop: ``async def reply(m, t): await asyncio.sleep(0.01)``)."""

_SCOPE: contextvars.ContextVar[dict[str, Script] | None] = contextvars.ContextVar("coherence_mock_scripts",
                                                                                 default=None)
_UNSCOPED: dict[str, Script] = {}
"""Scripts registered outside any :func:`script_scope` (a benchmark script's own process)."""


def scripts() -> dict[str, Script]:
    """The scripts of the current scope (a test's own, see :func:`script_scope`)."""
    scope = _SCOPE.get()
    return _UNSCOPED if scope is None else scope


@contextmanager
def script_scope() -> Iterator[dict[str, Script]]:
    """A fresh set of scripts for the code run inside (tests: one per test, so no script registered
    by one test is seen by another)."""
    token = _SCOPE.set({})
    try:
        yield scripts()
    finally:
        _SCOPE.reset(token)


class MockChat:
    def __init__(self, name: str) -> None:
        known = scripts()
        if name not in known:
            raise ModelError(f"mock:{name}: no script registered (fix: call register_mock({name!r}, fn) first)")
        self.name, self.reply = f"mock:{name}", known[name]

    async def generate_async(self, *, messages: list[Message], params: dict[str, Any],
                             task: dict[str, Any]) -> ModelOutput:
        text = self.reply(messages, task)
        if inspect.isawaitable(text):
            text = await text
        return ModelOutput(text=text, input_tokens=sum(len(m["content"]) for m in messages),
                           output_tokens=len(text))


@provider("mock")
def _mock(name: str, spec: ModelSpec, pack: Pack | None) -> MockChat:
    return MockChat(name)
