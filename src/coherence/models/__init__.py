"""Chat model access: one async protocol, a registry of providers, and one call choke point.

Our own providers are ``provider:name`` specs (``local:smollm2``, ``offline:policy``,
``mock:...``); any other string is a LiteLLM model string passed through unchanged.
"""

from coherence.models.base import ChatAPI, Message, ModelOutput, TransientError
from coherence.models.calls import (Budget, BudgetReached, CallStats, CostLimitReached, Model, TimeLimitReached,
                                    call_key)
from coherence.models.registry import ModelPool, get_api, provider, register_mock
from coherence.models.remote import price

__all__ = [
    "Budget", "BudgetReached", "CallStats", "ChatAPI", "CostLimitReached", "Message", "Model", "ModelOutput",
    "ModelPool", "TimeLimitReached", "TransientError",
    "call_key", "get_api", "price", "provider", "register_mock",
]
