"""A lean client for OpenAI-compatible servers named with an ``api_base`` (vLLM, proxies, fakes).

Why it exists (measured, benchmarks/throughput.py machine, 2 cores, zero-latency local server,
64 in flight): a bare aiohttp client makes 1,375 calls/s, the openai SDK 258 calls/s and
``litellm.acompletion`` 172 calls/s, i.e. ~5.8 ms of CPU per call, of which ~3.9 ms is the openai SDK
LiteLLM wraps (httpx, pydantic response models) and the rest LiteLLM's own bookkeeping (its logging
object computes the response cost, ``get_model_info`` lookups, response metadata). At 64 requests in
flight and 0.5 s latency a run needs 128 calls/s, so LiteLLM alone would take most of one core.

Only ``openai/...`` and ``hosted_vllm/...`` model strings *with* an ``api_base`` take this path; they
speak the plain Chat Completions protocol, which is all we send. Every other provider (OpenAI's own
API, Anthropic, Gemini, Ollama's native API, ...) goes through LiteLLM, which also remains the price
table for every model. Errors map as LiteLLM's do: 429 and 5xx, timeouts, dropped connections and
malformed bodies are transient (retried by the choke point, ``Retry-After`` honoured); a 400 for
content policy, an invalid prompt or the context length is a per-item refusal (an output with its
class in ``refusal``, see :func:`coherence.models.base.classify_refusal`); 401, 403, 404, a 429 for
exhausted quota and other 4xx are fatal.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from coherence.config import ModelSpec
from coherence.errors import FatalProviderError
from coherence.models.base import Message, ModelOutput, TransientError, classify_refusal

PREFIXES = ("openai/", "hosted_vllm/")
PASSTHROUGH = {"temperature", "max_tokens", "top_p", "seed", "response_format", "stop"}


def handles(spec: ModelSpec) -> bool:
    """True for specs this client serves (an OpenAI-compatible model string with an ``api_base``)."""
    return bool(spec.api_base) and spec.model.startswith(PREFIXES) \
        and os.environ.get("COHERENCE_OPENAI_VIA_LITELLM", "") not in ("1", "true", "True")


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (None if absent or an HTTP date, which we do not parse)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class OpenAICompatChat:
    """``POST {api_base}/chat/completions`` over one pooled aiohttp session per model."""

    def __init__(self, spec: ModelSpec, api_key: str | None) -> None:
        self.name, self.spec = spec.model, spec
        self.wire_model = spec.model.split("/", 1)[1]
        self.url = spec.api_base.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]
        self.headers = {"authorization": f"Bearer {api_key or 'not-needed'}", "content-type": "application/json"}
        self._session: Any = None

    def _client(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self.spec.timeout))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def generate_async(self, *, messages: list[Message], params: dict[str, Any],
                             task: dict[str, Any]) -> ModelOutput:
        import aiohttp

        body = {"model": self.wire_model, "messages": messages,
                **{k: v for k, v in params.items() if k in PASSTHROUGH}}
        try:
            async with self._client().post(self.url, data=json.dumps(body, ensure_ascii=False).encode(),
                                           headers=self.headers) as resp:
                status, raw = resp.status, await resp.read()
                retry_after = resp.headers.get("retry-after")
        except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError) as exc:
            raise TransientError("connection" if not isinstance(exc, asyncio.TimeoutError) else "timeout",
                                 f"{type(exc).__name__}: {exc}"[:300]) from None
        if status != 200:
            kind, reason = self._raise(status, raw, retry_after)
            return ModelOutput(text="", refusal=kind, extra={"reason": reason})
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise TransientError("malformed", f"malformed response body: {raw[:200]!r}") from None
        usage = data.get("usage") or {}
        return ModelOutput(text=text, input_tokens=usage.get("prompt_tokens"),
                           output_tokens=usage.get("completion_tokens"),
                           extra={"finish_reason": choice.get("finish_reason")})

    def _raise(self, status: int, raw: bytes, retry_after: str | None) -> tuple[str, str]:
        """Raise the error a non-200 reply means; return (class, message) if it refuses this prompt."""
        message = raw[:300].decode("utf-8", "replace")
        try:
            err = json.loads(raw).get("error") or {}
        except (ValueError, AttributeError):
            err = {}
        err = err if isinstance(err, dict) else {"message": str(err)}
        code, kind = err.get("code"), err.get("type")
        if status == 429 and "insufficient_quota" in (str(code), str(kind)):
            raise FatalProviderError(f"{self.name}: HTTP 429 insufficient_quota from {self.url}: {message} "
                                     f"(fix: add credit or raise the account's quota, then resume the run "
                                     f"with `coherence run --resume <run id>`)")
        if status == 429:
            raise TransientError("429", message, retry_after=_seconds(retry_after))
        if status >= 500 or status in (408, 409):
            raise TransientError(str(status), message, retry_after=_seconds(retry_after))
        if status in (400, 413, 422):
            refusal = classify_refusal(code, kind, err.get("message"), "" if err else message)
            if refusal is not None:
                return refusal, message
        fix = {401: "check the key variable (api_key_env) and that the key is valid",
               403: "check the key's permissions for this model",
               404: "check the model name and api_base"}.get(
            status, "check the model name, api_base and the role's params")
        raise FatalProviderError(f"{self.name}: HTTP {status} from {self.url}: {message} (fix: {fix})")
