"""The model card of a trained adapter: what it was trained on (pack version, run), how (the recipe as
resolved), and what it learned (held-out reward accuracy and margin at start and end)."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))


def model_card(result: dict[str, Any], *, record: dict[str, Any]) -> str:
    """Markdown card for ``<run>/train/<name>/README.md`` (also copied into ``adapter/``).

    Args:
        result: ``result.json`` of the job.
        record: ``train_config.json`` of the job (config, resolved settings, source, versions).

    Returns:
        The card's text.
    """
    res, src = record["resolved"], record["source"]
    recipe = "QLoRA (4-bit base)" if res["quantized"] else "LoRA (unquantised base)"
    lines = [
        "---", "library_name: peft", f"base_model: {record.get('base_hub_id') or record['base']['load_from']}",
        "tags: [dpo, trl, peft, lora, coherence]", "---", "",
        f"# {result['name']}: DPO adapter for {record['base']['spec']}", "",
        "A LoRA adapter trained with TRL's `DPOTrainer` by `coherence train` on cultural-coherence preference "
        "triplets (q, r-, r+).", "",
        "## Data", "",
        f"- packs: {', '.join(src['packs']) or 'unknown'}",
        f"- source: `{src['path']}`" + (f" (run `{src['run']}`)" if src.get("run") else ""),
        f"- triplets: {src['available']} available, {result['train_triplets']} trained on, "
        f"{result['heldout_triplets']} held out (ids in `split.json`), balanced across domains:", "",
        "| domain | available | train | held out |", "|---|---|---|---|",
    ]
    for domain, n in result["per_domain"].items():
        lines.append(f"| {domain} | {n['available']} | {n['train']} | {n['heldout']} |")
    if src.get("offline_roles"):
        lines += ["", f"**Offline data.** The triplets were made with deterministic pack-driven roles and heuristic "
                      f"judges ({', '.join(src['offline_roles'])}), not frontier models: this adapter demonstrates "
                      f"the pipeline, it is not a safety-tuned model."]
    q = res["quantization"] or {}
    lines += ["", "## Recipe", "",
              f"- {recipe} on {res['device']}; LoRA r={res['lora'].get('r')}, alpha={res['lora'].get('lora_alpha')}, "
              f"dropout={res['lora'].get('lora_dropout')}, target modules {res['lora'].get('target_modules')}",
              "- quantisation: " + (", ".join(f"{k}={v}" for k, v in q.items()) if q else "none"),
              "- DPO: " + ", ".join(f"{k}={res['dpo'][k]}" for k in (
                  "beta", "loss_type", "learning_rate", "num_train_epochs", "max_steps",
                  "per_device_train_batch_size", "gradient_accumulation_steps", "max_length") if k in res["dpo"]),
              "- paper recipe (arXiv 2606.06797): QLoRA 4-bit NF4, bf16 compute, LoRA on all attention and MLP "
              "projections, r=16, alpha=16, dropout 0.05, 10,000 triplets balanced across 5 domains",
              "- full resolved settings: `train_config.json`; libraries: "
              + ", ".join(f"{k} {v}" for k, v in record["versions"].items())]
    for note in res.get("notes", []):
        lines.append(f"- note: {note}")
    start, end = result.get("heldout_start") or {}, result.get("heldout_end") or {}
    lines += ["", "## What it learned (held-out slice)", "",
              "| | loss | reward accuracy | reward margin | reward chosen | reward rejected |", "|---|---|---|---|---|---|"]
    for label, m in (("start (step 0)", start), (f"end (step {result['steps']})", end)):
        lines.append(f"| {label} | {_fmt(m.get('loss'))} | {_fmt(m.get('rewards/accuracies'))} | "
                     f"{_fmt(m.get('rewards/margins'))} | {_fmt(m.get('rewards/chosen'))} | "
                     f"{_fmt(m.get('rewards/rejected'))} |")
    lines += ["", f"{result['steps']} optimiser steps; metrics over steps in `metrics.json` and `metrics.png`.", "",
              "## Use", "", "```bash",
              f"coherence generate --model {record['base']['spec']}+{result['adapter']} --prompts PROMPTS.jsonl",
              f"vllm serve {record.get('base_hub_id') or record['base']['load_from']} --enable-lora --lora-modules "
              f"{result['name']}={result['adapter']}", "```", ""]
    return "\n".join(lines)
