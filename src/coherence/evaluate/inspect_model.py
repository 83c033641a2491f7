"""The Inspect model API ``coherence/<label>``: Inspect's solvers reach our models through the
project's call choke point (:class:`coherence.models.Model`: cached in the eval's store, bounded,
retried, resumable), never through a provider of Inspect's own.

``get_model("coherence/<label>", target=<Model>)`` gives an Inspect model whose ``generate`` calls
``target.chat_async``; Inspect's own cache and retries stay off (ours do both, and a re-run is served
from ``eval.db`` with zero provider calls).
"""

from __future__ import annotations

from typing import Any

from inspect_ai.model import (ChatMessage, GenerateConfig, ModelAPI, ModelOutput, ModelUsage, get_model,
                              modelapi)
from inspect_ai.tool import ToolChoice, ToolInfo

from coherence.models import Model

PROVIDER = "coherence"


class CoherenceModelAPI(ModelAPI):
    """An Inspect ``ModelAPI`` over one of our :class:`coherence.models.Model` instances."""

    def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                 config: GenerateConfig = GenerateConfig(), **model_args: Any) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        self.target: Model | None = model_args.get("target")
        self.role: str = model_args.get("role", "eval_target")
        self.params: dict[str, Any] = dict(model_args.get("params") or {})

    def max_connections(self) -> int:
        # our Model bounds concurrency per model (and local models batch what is in flight)
        return 256

    async def generate(self, input: list[ChatMessage], tools: list[ToolInfo], tool_choice: ToolChoice,
                       config: GenerateConfig) -> ModelOutput:
        if self.target is None:
            raise RuntimeError(f"{PROVIDER}/{self.model_name}: no target model (this model API is created by "
                               f"coherence.evaluate, not from the command line)")
        messages = [{"role": m.role, "content": m.text} for m in input if m.role in ("system", "user", "assistant")]
        out = await self.target.chat_async(messages, role=self.role, params=self.params)
        return ModelOutput.from_content(
            model=self.model_name, content=out.text,
            # usage as the provider reported it (a cached answer reports the original call's)
        ).model_copy(update={"usage": ModelUsage(input_tokens=out.input_tokens or 0,
                                                 output_tokens=out.output_tokens or 0,
                                                 total_tokens=(out.input_tokens or 0) + (out.output_tokens or 0))})


@modelapi(name=PROVIDER)
def coherence_provider() -> type[ModelAPI]:
    return CoherenceModelAPI


def inspect_model(label: str, target: Model, *, role: str = "eval_target",
                  params: dict[str, Any] | None = None) -> Any:
    """The Inspect model for one of ours (not memoised: each eval gets its own)."""
    return get_model(f"{PROVIDER}/{label}", memoize=False, target=target, role=role, params=params or {},
                     config=GenerateConfig(max_connections=256))
