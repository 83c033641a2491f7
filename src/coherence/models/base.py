"""The one async chat protocol every provider implements, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

Message = dict[str, str]
"""``{"role": "system" | "user" | "assistant", "content": str}``"""


@dataclass
class ModelOutput:
    """What one call returned."""

    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float | None = None
    offline: bool = False
    """True for deterministic pack-driven providers: their output is not a language model's."""
    extra: dict[str, Any] = field(default_factory=dict)


class TransientError(Exception):
    """A failure worth retrying (429, 5xx, timeout, dropped connection)."""

    def __init__(self, kind: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


class ChatAPI(Protocol):
    """A provider. ``task`` carries the structured request behind the messages (stage, strategy,
    sub-category...): pack-driven offline providers read it, language models ignore it."""

    name: str

    async def generate_async(self, *, messages: list[Message], params: dict[str, Any],
                             task: dict[str, Any]) -> ModelOutput: ...
