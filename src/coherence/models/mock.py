"""``mock:<name>``: scripted replies for tests (see :func:`coherence.models.register_mock`)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from coherence.config import ModelSpec
from coherence.errors import ModelError
from coherence.models.base import Message, ModelOutput
from coherence.models.registry import provider
from coherence.packs.loader import Pack

SCRIPTS: dict[str, Callable[[list[Message], dict[str, Any]], str | Awaitable[str]]] = {}
"""Scripts by name: ``reply(messages, task)`` returns the text, or an awaitable of it (a script that
takes its time without blocking the event loop: ``async def reply(m, t): await asyncio.sleep(0.01)``)."""


class MockChat:
    def __init__(self, name: str) -> None:
        if name not in SCRIPTS:
            raise ModelError(f"mock:{name}: no script registered (fix: call register_mock({name!r}, fn) first)")
        self.name, self.reply = f"mock:{name}", SCRIPTS[name]

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
