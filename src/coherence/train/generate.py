"""``coherence generate``: answer prompts with a base model and, given an adapter, with the tuned model,
side by side (the adapter is disabled for the base answers, so the model is loaded once)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from coherence.errors import CoherenceError
from coherence.train.base import resolve_base
from coherence.train.data import prompt_messages


def parse_model(spec: str) -> tuple[str, Path | None]:
    """``BASE``, ``BASE+ADAPTER`` or a ``coherence train`` job folder -> (base spec, adapter folder or None).

    Raises:
        CoherenceError: The adapter folder holds no adapter.
    """
    job = Path(spec)
    if (job / "train_config.json").is_file() and (job / "adapter").is_dir():
        record = json.loads((job / "train_config.json").read_text(encoding="utf-8"))
        return record["base"]["spec"], job / "adapter"
    base, plus, adapter = spec.rpartition("+")
    if not plus:
        return spec, None
    folder = Path(adapter)
    if (folder / "adapter").is_dir() and not (folder / "adapter_config.json").is_file():
        folder = folder / "adapter"
    if not (folder / "adapter_config.json").is_file():
        raise CoherenceError(f"{adapter}: no adapter_config.json (fix: --model BASE+runs/<id>/train/<name>/adapter)")
    return base, folder


def load_prompts(spec: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Prompts from a JSONL file (``prompt`` as text or messages, or ``framed``), ``pack:NAME`` (the pack's
    held-out eval split) or a ``coherence train`` job folder (its held-out triplets).

    Args:
        spec: Where the prompts are.
        limit: Keep the first ``limit`` prompts.

    Returns:
        Rows with ``id`` and ``messages`` (plus the file's other fields).

    Raises:
        CoherenceError: The file is missing or a row has no prompt.
    """
    if spec.startswith("pack:"):
        from coherence.packs.fill import export_eval
        from coherence.packs.loader import load_pack

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(export_eval(load_pack(spec[5:]), Path(tmp), fills_per_template=1)["eval_prompts"])
            return load_prompts(str(path), limit=limit)
    path = Path(spec)
    if path.is_dir() and (path / "heldout.jsonl").is_file():
        path = path / "heldout.jsonl"
    if not path.is_file():
        raise CoherenceError(f"{spec}: no such prompts file (fix: a JSONL file with a 'prompt' per line, "
                             f"pack:ko-KR, or a runs/<id>/train/<name> folder for its held-out triplets)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        if "prompt" not in row and "framed" in row:
            row["prompt"] = row["framed"]
        if not row.get("prompt"):
            raise CoherenceError(f"{path}:{n + 1}: no 'prompt' (fix: one object per line with a prompt text or "
                                 f"message list)")
        rows.append({**row, "id": str(row.get("id", n)), "messages": prompt_messages(row)})
    return rows[:limit] if limit else rows


def _answer(model: Any, tok: Any, conversations: list[list[dict[str, str]]], *, max_new_tokens: int,
            batch_size: int) -> list[str]:
    import torch

    out: list[str] = []
    device = next(model.parameters()).device
    for i in range(0, len(conversations), batch_size):
        texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations[i:i + batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, repetition_penalty=1.1,
                                 pad_token_id=tok.pad_token_id)
        width = enc["input_ids"].shape[1]
        out += [tok.decode(row[width:], skip_special_tokens=True).strip() for row in gen]
    return out


def generate(
    model_spec: str,
    *,
    prompts: list[dict[str, Any]],
    max_new_tokens: int = 128,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Greedy answers of the base and (with an adapter) the tuned model to each prompt.

    Args:
        model_spec: ``BASE``, ``BASE+ADAPTER`` or a train job folder; BASE as for ``coherence train --base``.
        prompts: Rows from ``load_prompts``.
        max_new_tokens: Longest answer.
        batch_size: Prompts per ``generate`` call.

    Returns:
        One row per prompt: ``id``, ``prompt`` (text of the last user turn), ``base`` and, with an adapter,
        ``tuned``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base_spec, adapter = parse_model(model_spec)
    where, _ = resolve_base(base_spec)
    tok = AutoTokenizer.from_pretrained(str(adapter) if adapter else where)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.bfloat16 if cuda else torch.float32)
    if cuda:
        model = model.to("cuda")
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    convs = [p["messages"] for p in prompts]
    kw = {"max_new_tokens": max_new_tokens, "batch_size": batch_size}
    if adapter is not None:
        with model.disable_adapter():
            base_answers = _answer(model, tok, convs, **kw)
        tuned = _answer(model, tok, convs, **kw)
    else:
        base_answers, tuned = _answer(model, tok, convs, **kw), None
    rows = []
    for i, p in enumerate(prompts):
        row = {"id": p["id"], "prompt": p["messages"][-1]["content"], "base": base_answers[i]}
        if tuned is not None:
            row["tuned"] = tuned[i]
        for key in ("domain", "subcategory"):
            if p.get(key):
                row[key] = p[key]
        rows.append(row)
    return rows
