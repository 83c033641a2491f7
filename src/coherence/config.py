"""Run configuration: which model plays each role, and the pipeline's knobs.

Settings apply in the order: defaults here, then the ``--config`` YAML, then CLI flags.
"""

from __future__ import annotations

import copy

from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from coherence.errors import ConfigError

_M = TypeVar("_M", bound=BaseModel)


class Price(BaseModel):
    """USD per million tokens, for a model LiteLLM's price table does not know (a self-hosted one, a
    retired one) or whose price differs (a negotiated rate)."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    """USD per million prompt tokens."""
    output: float = Field(ge=0)
    """USD per million completion tokens."""


class ModelSpec(BaseModel):
    """One model: a ``provider:name`` spec of ours or a LiteLLM model string."""

    model_config = ConfigDict(extra="forbid")

    model: str
    """``local:smollm2``, ``offline:policy``, ``mock:...`` or a LiteLLM string such as ``openai/gpt-4.1``."""
    api_base: str | None = None
    """Base URL of an OpenAI-compatible server (vLLM, Ollama, a proxy)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the key (never the key itself)."""
    max_concurrency: int = Field(default=8, ge=1)
    """Most requests in flight at once to this provider endpoint (model + ``api_base``), every role on
    it together: roles naming one endpoint share one bound, the tightest one any of them sets."""
    rpm: int | None = Field(default=None, ge=1)
    """Most requests started per minute."""
    tpm: int | None = Field(default=None, ge=1)
    """Most tokens per minute (prompt estimated at ~3 characters a token, plus ``max_tokens``)."""
    limit_group: str | None = None
    """Models naming the same group share one ``max_concurrency``/``rpm``/``tpm`` bound (per field the
    tightest a member sets), e.g. several models behind one vLLM server or one provider account.
    None: the bound of the spec's endpoint (model + ``api_base``)."""
    timeout: float = Field(default=120.0, gt=0)
    """Seconds before one request is abandoned and retried. For ``local:`` models, seconds its
    generation may take, not counting the time it waits behind other batches; an answer that comes
    after the caller gave up serves the retry."""
    max_retries: int = Field(default=5, ge=0)
    """Retries of 429, 5xx and timeouts, with exponential backoff."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Generation parameters (temperature, max_tokens, ...), part of the cache key."""
    price: Price | None = None
    """USD per million tokens (``{input: 3, output: 15}``), used instead of LiteLLM's table by
    ``--max-cost``, ``--dry-run`` and the recorded costs. None: LiteLLM's table."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype of ``local:`` models (others ignore it). ``auto``: bfloat16 on a GPU and on a CPU
    with native bfloat16 (AVX512-BF16 or AMX: 2.3x faster than float32 for SmolLM2), else float32."""

    OPERATIONAL: ClassVar[frozenset[str]] = frozenset(
        {"max_concurrency", "rpm", "tpm", "limit_group", "timeout", "max_retries", "price", "api_key_env"})
    """Fields that change how calls are made or priced, never what they return: not part of a run's
    identity, so changing them in the config continues the same run."""

    @property
    def heuristic_judge(self) -> bool:
        """``offline:judge*``: a heuristic judge, which makes no model call."""
        return self.model.startswith("offline:judge")

    @field_validator("model")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must be a non-empty spec such as 'local:smollm2' or 'openai/gpt-4.1'")
        return value.strip()


def slot_name(role: str, index: int | None = None) -> str:
    """A role slot's identity: ``response_judge``, ``generators[0]``, ``filter_judges[2]``. Candidates,
    verdicts, calls and usage counts are keyed by it; the model string is data on the row."""
    return role if index is None else f"{role}[{index}]"


def _spec(model: str, **kw: Any) -> ModelSpec:
    return ModelSpec(model=model, **kw)


class Roles(BaseModel):
    """The model of each role in stages A-D."""

    model_config = ConfigDict(extra="forbid")

    target: ModelSpec = Field(default_factory=lambda: _spec(
        "local:smollm2", max_concurrency=32, params={"max_tokens": 64, "repetition_penalty": 1.1}))
    """The model being red-teamed; its jailbroken answers become r-."""
    attacker: ModelSpec = Field(default_factory=lambda: _spec("offline:attacker", params={"plain_attempts": 0}))
    """Rewrites seeds with the 5 strategies. The default target (SmolLM2-135M, trained on English)
    refused or misread 96 of 96 Korean-only first attempts in a measured run, so the offline attacker
    code-switches from the first attempt (``plain_attempts: 0``)."""
    slot_filler: ModelSpec = Field(default_factory=lambda: _spec("offline:slots"))
    """Fills template slots into seed queries."""
    generators: list[ModelSpec] = Field(
        default_factory=lambda: [_spec("offline:policy"), _spec("offline:policy-brief"),
                                 _spec("offline:policy-warm")],
        min_length=1)
    """Safety-response generators under the category policy (the paper uses 3)."""
    query_judge: ModelSpec = Field(default_factory=lambda: _spec("offline:judge"))
    """Scores query harm 1-4."""
    response_judge: ModelSpec = Field(default_factory=lambda: _spec("offline:judge-strict"))
    """Scores target responses 1-5 (jailbreak) and r+ candidates 1-5 (safety and coherence). The
    offline default is the strict heuristic judge: a seed whose answer only the lenient judge calls
    harmful keeps being attacked instead of advancing with an r- that stage D would reject."""
    filter_judges: list[ModelSpec] = Field(
        default_factory=lambda: [_spec("offline:judge"), _spec("offline:judge-morph"),
                                 _spec("offline:judge-strict")],
        min_length=1)
    """The unanimous ensemble of stage D (the paper uses 3)."""

    def specs(self) -> list[ModelSpec]:
        """Every role's spec, the lists flattened."""
        return [self.target, self.attacker, self.slot_filler, self.query_judge, self.response_judge,
                *self.generators, *self.filter_judges]

    def slots(self) -> list[tuple[str, ModelSpec]]:
        """Every role slot with its spec: ``("target", ...)``, ``("generators[0]", ...)``, ..."""
        out: list[tuple[str, ModelSpec]] = []
        for role in ("target", "attacker", "slot_filler", "query_judge", "response_judge", "generators",
                     "filter_judges"):
            spec = getattr(self, role)
            if isinstance(spec, list):
                out += [(slot_name(role, i), s) for i, s in enumerate(spec)]
            else:
                out.append((role, spec))
        return out

    def slot_models(self) -> dict[str, str]:
        """Role slot -> model string (the provenance of every triplet carries it)."""
        return {slot: spec.model for slot, spec in self.slots()}

    def offline_models(self) -> list[str]:
        """The deterministic pack-driven and heuristic roles (named in every export)."""
        return sorted({s.model for s in self.specs() if s.model.startswith("offline:")})


class PipelineConfig(BaseModel):
    """Knobs of stages A-D."""

    model_config = ConfigDict(extra="forbid")

    seeds_per_template: int = Field(default=5, ge=1)
    """Slot fills drawn per template in stage A."""
    variants_per_fill: int = Field(default=1, ge=1)
    """Slot-filler expansions of each fill, each its own seed (near-duplicates are removed as usual).
    An LLM slot filler sampling above temperature 0 writes a different query each time, which is how a
    pack's fills reach a 10,000-triplet target; the offline filler writes the same text, so keep 1."""
    max_seeds: int | None = Field(default=None, ge=1)
    """Cap on seeds (taken in domain-interleaved order; None: all)."""
    near_duplicate_threshold: float = Field(default=0.85, gt=0, le=1)
    """Character 3-gram Jaccard similarity at or above which a seed is a near-duplicate."""
    max_attempts: int = Field(default=5, ge=1)
    """Attack attempts per seed; strategies rotate in order."""
    jailbreak_threshold: int = Field(default=4, ge=1, le=5)
    """Response-judge harm score at or above which an attempt counts as a jailbreak (4: actionable harm)."""
    min_query_harm: int = Field(default=2, ge=1, le=4)
    """Queries the query judge scores below this are discarded (paper: < 2)."""
    target_count: int = Field(default=60, ge=1)
    """Accepted triplets wanted in total, balanced across domains."""
    domain_patience: int | None = Field(default=20, ge=1)
    """Stop attacking a domain after this many attacked seeds have given it no accepted triplet
    (the target resists it); None: try every seed."""
    max_minutes: float | None = Field(default=None, gt=0)
    """Wall-clock budget of one invocation: no new attack attempt starts after it; the run stops
    cleanly and ``coherence run`` again (or ``--resume``) continues it. None (the default): no budget;
    only the built-in offline default run (no ``--config``, default roles) gets
    :data:`DEFAULT_RUN_MINUTES`. Not part of the run id."""
    finish_started_seeds: bool = True
    """With a time budget: near the deadline a seed starts its first attack attempt only if it and the
    seeds under attack can make their remaining attempts in time (estimated from the target's recent
    answers per second and latency: :meth:`coherence.pipeline.context.RunContext.may_start_seed`), and
    once one did not start, the seeds after it (which cannot commit in this invocation) make no call; the
    seeds under attack finish and commit. Nothing is skipped: the seeds not started are attacked by the
    next invocation. False: every seed goes on until the deadline. Not part of the run id."""
    open_waves: int = Field(default=2, ge=1)
    """Waves of seeds in flight at once. With 2, the next wave is chosen as soon as the wave before the
    current one has committed, and its calls take the slots the current wave's slowest seeds leave
    free (they have priority). 1: each wave waits for the previous one to finish."""
    random_seed: int = 0
    """Seed of every random choice (slot fills, framings)."""


class RunConfig(BaseModel):
    """A whole run: pack, roles, pipeline knobs."""

    model_config = ConfigDict(extra="forbid")

    pack: str = "ko-KR"
    """Pack name or folder."""
    roles: Roles = Field(default_factory=Roles)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    runs_dir: Path = Path("runs")
    """Where ``runs/<id>/`` folders are created."""


DEFAULT_RUN_MINUTES = 12.0
"""Time budget of the built-in offline default run (``coherence run`` with no config and the default
roles), so that a first try on a laptop ends in minutes; any other run has none unless it asks."""


def load_layered(model: type[_M], path: str | Path | None, overrides: dict[str, Any] | None, *,
                 missing_fix: str, start: str, section: str | None = None, fields_at: str) -> _M:
    """Defaults of ``model``, then the YAML file (its ``section`` if it has one), then ``overrides``
    (dotted keys; a None value sets the field to null: callers leave out the flags not given). Every
    failure is a one-line :class:`ConfigError`."""
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{file}: no such config file (fix: {missing_fix})")
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: invalid YAML: {exc} (fix: correct the syntax)") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: expected a mapping at the top level (fix: start with {start})")
        if section and isinstance(data.get(section), dict):  # a section of a larger file
            data = data[section]
    defaults: dict[str, Any] | None = None
    for dotted, value in (overrides or {}).items():
        node, default_node = data, None
        *parents, leaf = dotted.split(".")
        for i, part in enumerate(parents):
            if part not in node:
                # a key inside a section neither the file nor an earlier override gave: start from the
                # section's defaults (``--set roles.target.timeout=600`` keeps the default target model)
                if defaults is None:
                    try:
                        defaults = model().model_dump()
                    except ValidationError:
                        defaults = {}
                default_node = defaults
                for p in parents[:i + 1]:
                    default_node = default_node.get(p) if isinstance(default_node, dict) else None
                node[part] = copy.deepcopy(default_node) if isinstance(default_node, dict) else {}
            child = node[part]
            if not isinstance(child, dict):
                raise ConfigError(f"{dotted}: {part} is not a section (fix: give a key inside it)")
            node = child
        node[leaf] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path or '(defaults)'}: {where}: {err['msg']} "
                          f"(fix: see the {model.__name__} fields in {fields_at})") from None


def _identity(roles: Roles) -> Any:
    """The roles without their operational fields (bounds, timeouts, prices): what they answer."""
    return roles.model_dump(exclude={name: {"__all__": ModelSpec.OPERATIONAL} if isinstance(getattr(roles, name), list)
                                     else ModelSpec.OPERATIONAL for name in type(roles).model_fields})


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML file, then ``overrides`` (dotted keys such as ``pipeline.target_count``;
    None sets a field to null). The built-in offline default run (no file, default roles, no
    ``pipeline.max_minutes`` given) gets the :data:`DEFAULT_RUN_MINUTES` time budget."""
    config = load_layered(RunConfig, path, overrides, missing_fix="check the path, or see configs/ for examples",
                          start="'roles:'", fields_at="coherence/config.py")
    if path is None and "pipeline.max_minutes" not in (overrides or {}) and _identity(config.roles) == _identity(Roles()):
        config.pipeline.max_minutes = DEFAULT_RUN_MINUTES
    return config


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["pipeline.target_count=20", "dpo.beta=null"]`` -> ``{"pipeline.target_count": 20, "dpo.beta": None}``
    (values parsed as YAML, so ``null`` sets a field to null)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (fix: e.g. --set pipeline.target_count=20)")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def given(flags: dict[str, Any]) -> dict[str, Any]:
    """The CLI flags that were given (a flag left out is None and must not set its field to null)."""
    return {k: v for k, v in flags.items() if v is not None}
