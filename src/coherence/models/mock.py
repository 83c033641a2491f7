"""``mock:<name>``: scripted replies for tests (see :func:`coherence.models.register_mock`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coherence.config import ModelSpec
from coherence.errors import ModelError
from coherence.models.base import Message, ModelOutput
from coherence.models.registry import provider
from coherence.packs.loader import Pack

SCRIPTS: dict[str, Callable[[list[Message], dict[str, Any]], str]] = {}


class MockChat:
    def __init__(self, name: str) -> None:
        if name not in SCRIPTS:
            raise ModelError(f"mock:{name}: no script registered (fix: call register_mock({name!r}, fn) first)")
        self.name, self.reply = f"mock:{name}", SCRIPTS[name]

    async def generate_async(self, *, messages: list[Message], params: dict[str, Any],
                             task: dict[str, Any]) -> ModelOutput:
        text = self.reply(messages, task)
        return ModelOutput(text=text, input_tokens=sum(len(m["content"]) for m in messages),
                           output_tokens=len(text))


@provider("mock")
def _mock(name: str, spec: ModelSpec, pack: Pack | None) -> MockChat:
    return MockChat(name)
