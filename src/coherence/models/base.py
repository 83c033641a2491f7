"""The one async chat protocol every provider implements, and what it returns."""

from __future__ import annotations

import re
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
    refusal: str | None = None
    """Set when the provider refused this one prompt (a 400 for content policy, an invalid prompt or
    the context length): its class (:data:`REFUSALS`); ``text`` is empty and ``extra["reason"]`` keeps
    the provider's message. What it means depends on the role (see the pipeline stages)."""
    latency: float | None = None
    """Seconds from the call's concurrency slot to its answer, for a call made now (None: from the cache)."""


REFUSALS = ("content_filter", "invalid_prompt", "context_length")
"""Classes of per-item provider refusals: the item is recorded and skipped, the run goes on."""

_REFUSAL_PATTERNS = (
    ("context_length", re.compile(r"context[_ ]length|context window|maximum context|too many tokens|"
                                  r"prompt is too long|input is too long|reduce the length", re.I)),
    ("invalid_prompt", re.compile(r"invalid[_ ]prompt", re.I)),
    ("content_filter", re.compile(r"content[_ ]filter|content[_ ]policy|content management policy|"
                                  r"responsibleaipolicyviolation|safety (system|filter)|blocked by .*safety|"
                                  r"prohibited[_ ]content|flagged as potentially violating", re.I)),
)


def classify_refusal(*fields: Any) -> str | None:
    """The refusal class (:data:`REFUSALS`) a provider's 400 error stands for, from its ``code``,
    ``type`` and message (OpenAI, Azure, Anthropic, Gemini and vLLM spell them differently), or None
    when it is another bad request."""
    text = " ".join(str(f) for f in fields if f)
    for kind, pattern in _REFUSAL_PATTERNS:
        if pattern.search(text):
            return kind
    return None


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
