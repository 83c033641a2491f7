"""Remote models through LiteLLM: OpenAI, Anthropic, Gemini, vLLM, Ollama, any OpenAI-compatible server.

Retries are ours (:mod:`coherence.models.calls`), so LiteLLM's are off; its errors are mapped to
transient (retry), a per-item refusal (content policy, invalid prompt, context length: an output
with its class in ``refusal``) or fatal (bad key, unknown model, exhausted quota: stop the run at
once, the fix in the message). Keys are read from the environment variable the
spec names and are never logged.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from coherence.config import ModelSpec
from coherence.errors import FatalProviderError
from coherence.models.base import Message, ModelOutput, TransientError, classify_refusal

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price table

_PASSTHROUGH = {"temperature", "max_tokens", "top_p", "seed", "response_format", "stop"}


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_fields(exc: Exception) -> str:
    """Everything an error says about its cause: message, ``code``/``type`` and the reply body (LiteLLM's
    message does not always carry the provider's error code, e.g. ``insufficient_quota``)."""
    parts = [str(exc), str(getattr(exc, "code", "") or ""), str(getattr(exc, "type", "") or "")]
    body = getattr(exc, "body", None)
    if body:
        parts.append(str(body))
    response = getattr(exc, "response", None)
    try:
        parts.append(str(getattr(response, "text", "") or ""))
    except Exception:  # noqa: BLE001 - a response without a readable body
        pass
    return " ".join(parts)


def api_key(spec: ModelSpec) -> str | None:
    """The key from the variable the spec names (None if it names none)."""
    if not spec.api_key_env:
        return None
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise FatalProviderError(
            f"{spec.model}: environment variable {spec.api_key_env} is not set "
            f"(fix: export {spec.api_key_env}=... before the run; the key is never written to disk)")
    return key


def make_remote(spec: ModelSpec) -> Any:
    """The provider for a LiteLLM model string: the lean OpenAI-compatible client for ``openai/`` and
    ``hosted_vllm/`` strings with an ``api_base`` (see :mod:`coherence.models.openai_compat`), LiteLLM
    for everything else."""
    from coherence.models import openai_compat

    price(spec, 0, 0)  # loads LiteLLM's price table now, not in the event loop once calls are in flight
    if openai_compat.handles(spec):
        return openai_compat.OpenAICompatChat(spec, api_key(spec))
    return LiteLLMChat(spec)


class LiteLLMChat:
    """A LiteLLM model string with an optional ``api_base`` and key variable."""

    def __init__(self, spec: ModelSpec) -> None:
        self.name, self.spec = spec.model, spec
        self.api_key: str | None = api_key(spec)

    async def generate_async(self, *, messages: list[Message], params: dict[str, Any],
                             task: dict[str, Any]) -> ModelOutput:
        import litellm

        litellm.suppress_debug_info = True
        kwargs: dict[str, Any] = {k: v for k, v in params.items() if k in _PASSTHROUGH}
        if self.spec.api_base:
            kwargs["api_base"] = self.spec.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        elif self.spec.api_base:
            kwargs["api_key"] = "not-needed"  # local OpenAI-compatible servers accept any key
        try:
            resp = await litellm.acompletion(model=self.spec.model, messages=messages, num_retries=0, max_retries=0,
                                             timeout=self.spec.timeout, drop_params=True, **kwargs)
        except litellm.ContentPolicyViolationError as exc:
            return ModelOutput(text="", refusal="content_filter", extra={"reason": str(exc)[:500]})
        except litellm.ContextWindowExceededError as exc:
            return ModelOutput(text="", refusal="context_length", extra={"reason": str(exc)[:500]})
        except litellm.AuthenticationError as exc:
            raise FatalProviderError(f"{self.name}: {type(exc).__name__}: {str(exc)[:300]} "
                                     f"(fix: check the key variable (api_key_env) and that the key is valid)") from None
        except (litellm.PermissionDeniedError, litellm.NotFoundError) as exc:
            raise FatalProviderError(f"{self.name}: {type(exc).__name__}: {str(exc)[:300]} "
                                     f"(fix: check the model name, api_base and the key's permissions)") from None
        except litellm.BadRequestError as exc:
            refusal = classify_refusal(_error_fields(exc))
            if refusal is not None:
                return ModelOutput(text="", refusal=refusal, extra={"reason": str(exc)[:500]})
            raise FatalProviderError(f"{self.name}: {type(exc).__name__}: {str(exc)[:300]} "
                                     f"(fix: check the model name, api_base and the role's params)") from None
        except litellm.RateLimitError as exc:
            if "insufficient_quota" in _error_fields(exc):
                raise FatalProviderError(f"{self.name}: insufficient_quota: {str(exc)[:300]} (fix: add credit or "
                                         f"raise the account's quota, then `coherence run --resume <run id>`)") from None
            raise TransientError("429", str(exc)[:300], retry_after=_retry_after(exc)) from None
        except (litellm.Timeout, litellm.APIConnectionError, litellm.InternalServerError,
                litellm.ServiceUnavailableError, litellm.BadGatewayError) as exc:
            raise TransientError(type(exc).__name__, str(exc)[:300]) from None
        except litellm.APIError as exc:
            status = getattr(exc, "status_code", 0) or 0
            if status >= 500 or status == 0:
                raise TransientError(str(status or "api_error"), str(exc)[:300]) from None
            raise FatalProviderError(f"{self.name}: {str(exc)[:300]}") from None
        choice = resp.choices[0]
        text = choice.message.content or ""
        usage = getattr(resp, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        cost = price(self.spec, prompt_tokens or 0, completion_tokens or 0) if usage is not None else None
        if cost is None:
            try:
                cost = float(litellm.completion_cost(completion_response=resp))
            except Exception:  # noqa: BLE001 - unknown price (custom server): recorded as unknown
                cost = None
        return ModelOutput(text=text, input_tokens=prompt_tokens, output_tokens=completion_tokens, cost=cost,
                           extra={"finish_reason": getattr(choice, "finish_reason", None)})


@functools.lru_cache(maxsize=256)
def _unit_prices(model: str) -> tuple[float, float] | None:
    """USD per prompt token and per completion token from LiteLLM's local table (looked up once per
    model: the lookup costs ~0.3 ms, too much to repeat on every call)."""
    import litellm

    try:
        p, _ = litellm.cost_per_token(model=model, prompt_tokens=1_000, completion_tokens=0)
        _, c = litellm.cost_per_token(model=model, prompt_tokens=0, completion_tokens=1_000)
        return float(p) / 1_000, float(c) / 1_000
    except Exception:  # noqa: BLE001 - a model LiteLLM has no price for (self-hosted): unknown
        return None


@functools.lru_cache(maxsize=256)
def max_output_tokens(model: str) -> int | None:
    """The model's maximum output (reasoning included) from LiteLLM's local model info; None if unknown."""
    if ":" in model.split("/")[0]:
        return None  # our own providers
    import litellm

    try:
        info = litellm.get_model_info(model)
    except Exception:  # noqa: BLE001 - a model LiteLLM does not know
        return None
    value = info.get("max_output_tokens") or info.get("max_tokens")
    return int(value) if value else None


def price(spec: ModelSpec, prompt_tokens: float, completion_tokens: float) -> float | None:
    """USD for one call: the spec's own ``price`` if it sets one, else LiteLLM's local price table;
    0 for our own providers, None if unpriced."""
    if spec.price is not None:
        return (spec.price.input * prompt_tokens + spec.price.output * completion_tokens) / 1e6
    if ":" in spec.model.split("/")[0]:
        return 0.0  # local:, offline:, mock: cost nothing
    unit = _unit_prices(spec.model)
    if unit is None:
        return None
    return unit[0] * prompt_tokens + unit[1] * completion_tokens
