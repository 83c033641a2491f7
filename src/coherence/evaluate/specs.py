"""Model arguments of ``coherence eval``, resolved offline into model specs of the call choke point.

``--model`` takes ``[LABEL=]SPEC[@API_BASE]`` where SPEC is any of:

- ``local:smollm2`` (or any ``provider:name`` of ours, ``mock:...`` in tests);
- ``BASE+ADAPTER``: a local base and a PEFT adapter folder (``local:smollm2+runs/<id>/train/<name>/adapter``);
- a ``coherence train`` job folder (``runs/<id>/train/<name>``): its base and its adapter;
- a Hugging Face id already in the local cache (loaded as ``local:ORG/NAME``; nothing is downloaded);
- any other string: a LiteLLM model string (``openai/gpt-4.1``), with ``@http://host:port/v1`` for an
  OpenAI-compatible server.

``coherence eval runs/<id>`` is the run's target plus every adapter trained in it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from coherence.config import ModelSpec, load_config
from coherence.errors import CoherenceError

LOCAL_DEFAULTS = {"max_concurrency": 32, "timeout": 3600.0}
"""Local models batch the calls in flight, 32 at a time (the pipeline's target setting); a call's
timeout covers its wait for a batch, so it is generous (a local model does not hang like a server)."""


@dataclass(frozen=True)
class EvalModel:
    """A model under evaluation: its label in tables, the spec as the user wrote it, the resolved spec."""

    label: str
    given: str
    spec: ModelSpec


def _adapter_digest(folder: Path) -> str:
    """Content hash of an adapter's weights and config: part of the cache key, so a retrained adapter
    at the same path is never served the old adapter's answers."""
    h = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json")):
        h.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return "sha256:" + h.hexdigest()[:16]


def adapter_folder(path: str) -> Path:
    """An adapter folder (or a train job folder holding ``adapter/``), resolved; one-line error if none."""
    folder = Path(path).expanduser()
    if (folder / "adapter").is_dir() and not (folder / "adapter_config.json").is_file():
        folder = folder / "adapter"
    if not (folder / "adapter_config.json").is_file():
        raise CoherenceError(f"{path}: no adapter_config.json (fix: BASE+runs/<id>/train/<name>/adapter, or a "
                             f"runs/<id>/train/<name> folder)")
    return folder.resolve()


def _in_hf_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers brings it
        return False
    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def _local_base(base: str) -> str:
    if base.startswith("local:"):
        return base
    if Path(base).expanduser().is_dir() or (re.fullmatch(r"[\w.-]+/[\w.-]+", base) and _in_hf_cache(base)):
        return f"local:{base}"
    raise CoherenceError(f"{base}: an adapter needs a local base (fix: local:smollm2, a model folder, or a "
                         f"Hugging Face id already in the local cache)")


def resolve(given: str, *, max_tokens: int, label: str | None = None) -> EvalModel:
    """One ``--model`` argument -> :class:`EvalModel` (raises a one-line error naming the spec and fix)."""
    text = given.strip()
    if "=" in text.split("@", 1)[0].split("+", 1)[0] and not text.startswith(("local:", "mock:")):
        label, text = text.split("=", 1)
    api_base = None
    match = re.search(r"@(https?://\S+)$", text)
    if match:
        api_base, text = match.group(1), text[:match.start()]
    if not text:
        raise CoherenceError(f"--model {given!r}: empty spec (fix: e.g. --model local:smollm2)")
    params: dict[str, object] = {"max_tokens": max_tokens, "temperature": 0}
    job = Path(text)
    extra: dict[str, object] = {}
    if job.is_dir() and (job / "train_config.json").is_file():
        record = json.loads((job / "train_config.json").read_text(encoding="utf-8"))
        base = record.get("base", {}).get("spec")
        if not base:
            raise CoherenceError(f"{job}/train_config.json: no base.spec (fix: give --model BASE+{job}/adapter)")
        text = f"{base}+{job / 'adapter'}"
        label = label or job.name
    base, plus, adapter = text.rpartition("+")
    if plus and base and not re.match(r"^[a-z][a-z0-9_]*:", adapter):
        folder = adapter_folder(adapter)
        model = f"{_local_base(base)}+{folder}"
        params["adapter"] = _adapter_digest(folder)
        extra = LOCAL_DEFAULTS
        label = label or folder.parent.name if folder.name == "adapter" else label or folder.name
    elif re.match(r"^[a-z][a-z0-9_]*:", text) and "/" not in text.split(":", 1)[0]:
        model = text
        extra = LOCAL_DEFAULTS if text.startswith("local:") else {}
    elif Path(text).expanduser().is_dir():
        if not (Path(text).expanduser() / "config.json").is_file():
            raise CoherenceError(f"{text}: a folder without config.json or train_config.json (fix: a transformers "
                                 f"model folder, a runs/<id>/train/<name> folder, or BASE+ADAPTER)")
        model, extra = f"local:{Path(text).expanduser().resolve()}", LOCAL_DEFAULTS
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", text) and api_base is None and _in_hf_cache(text):
        model, extra = f"local:{text}", LOCAL_DEFAULTS
    else:
        model = text  # a LiteLLM string
    if model.startswith("local:"):
        params["repetition_penalty"] = 1.1  # as the pipeline's target: greedy decoding of a small model loops
    spec = ModelSpec(model=model, api_base=api_base, params=params, **extra)  # type: ignore[arg-type]
    return EvalModel(label=label or _short(model), given=given, spec=spec)


def _short(model: str) -> str:
    name = model.split("+", 1)[0]
    return name.split(":", 1)[1] if name.startswith(("local:", "mock:")) else name.rsplit("/", 1)[-1]


def resolve_all(given: list[str], *, max_tokens: int) -> list[EvalModel]:
    """Every ``--model``; duplicate labels get ``#2``, ``#3``..."""
    out: list[EvalModel] = []
    seen: dict[str, int] = {}
    for g in given:
        m = resolve(g, max_tokens=max_tokens)
        seen[m.label] = seen.get(m.label, 0) + 1
        if seen[m.label] > 1:
            m = EvalModel(label=f"{m.label}#{seen[m.label]}", given=m.given, spec=m.spec)
        out.append(m)
    return out


def run_models(run_dir: Path, *, max_tokens: int) -> list[str]:
    """``--model`` arguments for a run: its target, then every adapter trained in it (by name)."""
    if not (run_dir / "config.yaml").is_file():
        raise CoherenceError(f"{run_dir}: no config.yaml: not a coherence run folder (fix: coherence eval "
                             f"runs/<id>, or --model SPEC)")
    target = load_config(run_dir / "config.yaml").roles.target.model
    jobs = sorted(p for p in (run_dir / "train").glob("*") if (p / "adapter" / "adapter_config.json").is_file())
    if not jobs:
        raise CoherenceError(f"{run_dir}/train: no trained adapter (fix: coherence train {run_dir} --base "
                             f"{target}, or compare models with --model)")
    return [f"base={target}", *(str(j) for j in jobs)]
