"""``coherence train``: TRL's ``DPOTrainer`` with a PEFT LoRA adapter (QLoRA on CUDA) on a run's triplets.

Outputs in ``<run>/train/<name>/``: ``adapter/`` (what you ship), ``train_config.json`` (everything
resolved), ``split.json`` (triplet ids of train and held-out) and ``heldout.jsonl``, ``metrics.jsonl`` /
``metrics.json`` / ``metrics.png``, ``README.md`` (the model card), ``result.json``, ``checkpoints/``
(a killed job resumes from the last one) and, with ``merge``, ``merged/``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coherence.errors import CoherenceError
from coherence.paths import check_output, mark, remove_owned, safe_name
from coherence.train import data as tdata
from coherence.train.base import hub_id, resolve_base
from coherence.train.card import model_card
from coherence.train.config import Resolved, TrainConfig, bnb_config, dpo_config, lora_config, resolve
from coherence.train.metrics import collect, make_callback, plot

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.split(":")[-1].rstrip("/").split("/")[-1]).strip("-") or "model"


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("trl", "peft", "transformers", "torch", "bitsandbytes"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def output_dir(source: tdata.Source, *, name: str, runs_dir: Path, out: Path | None) -> Path:
    """``<run>/train/<name>`` for a run; ``<runs_dir>/_train/<name>`` for a bare dataset; ``out`` if given."""
    if out is not None:
        return out
    return (source.run_dir if source.run_dir is not None else runs_dir / "_train") / "train" / name


def _offline_roles(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r for row in rows for r in (row.get("offline_roles") or [])})


def _load_tokenizer(where: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(where)
    except OSError as exc:
        raise CoherenceError(f"{where}: cannot load its tokenizer offline ({exc}) (fix: give a folder with "
                             f"tokenizer files, or a Hub id in the local cache)") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise CoherenceError(f"{where}: the tokenizer has no chat template, and the triplets are conversations "
                             f"(fix: use an instruct/chat model, or add a chat_template to its tokenizer_config.json)")
    return tok


def _init_kwargs(resolved: Resolved) -> dict[str, Any]:
    kwargs = dict(resolved.model_init_kwargs)
    if kwargs.get("device_map") == "local_process":
        from accelerate import PartialState

        kwargs["device_map"] = {"": PartialState().local_process_index}
    return kwargs


def build_trainer(*, base: str, resolved: Resolved, split: tdata.Split, out_dir: Path) -> Any:
    """A ``trl.DPOTrainer`` for the resolved recipe (TRL creates the PEFT model and the reference: the base
    with the adapter disabled).

    Args:
        base: Folder or cached Hub id of the base model.
        resolved: The resolved settings.
        split: Train and held-out rows.
        out_dir: The job folder; checkpoints go to ``out_dir/checkpoints``.

    Returns:
        The trainer, with the metrics callback attached.
    """
    import importlib.util

    from trl import DPOTrainer

    if resolved.quantized and importlib.util.find_spec("bitsandbytes") is None:
        raise CoherenceError("4-bit quantization needs bitsandbytes (fix: pip install -e '.[train,cuda]', or "
                             "--quantization none for plain LoRA)")
    dpo = dict(resolved.dpo)
    if not split.heldout:
        dpo["eval_strategy"] = "no"
    args = dpo_config(dpo, output_dir=out_dir / "checkpoints")
    args.model_init_kwargs = _init_kwargs(resolved)
    heldout = tdata.to_dataset(split.heldout) if split.heldout else None
    return DPOTrainer(
        model=base, args=args, processing_class=_load_tokenizer(base),
        train_dataset=tdata.to_dataset(split.train), eval_dataset=heldout,
        peft_config=lora_config(resolved.lora),
        quantization_config=bnb_config(resolved.quantization) if resolved.quantization else None,
        callbacks=[make_callback(out_dir / "metrics.jsonl")],
    )


def _record(cfg: TrainConfig, resolved: Resolved, *, base: str, source: tdata.Source) -> dict[str, Any]:
    return {
        "config": cfg.model_dump(mode="json"),
        "resolved": resolved.as_dict(),
        "base": {"spec": cfg.base, "load_from": base},
        "base_hub_id": hub_id(cfg.base, base),
        "source": {"path": str(source.path), "run": source.run_dir.name if source.run_dir else None,
                   "packs": source.packs, "available": len(source.rows),
                   "offline_roles": _offline_roles(source.rows)},
        "versions": _versions(),
    }


def _name_base(config: Path, base: str) -> None:
    """Name the base by its Hub id in ``adapter_config.json`` (PEFT records the local path it loaded),
    so that ``PeftModel.from_pretrained`` finds it on another machine."""
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        data["base_model_name_or_path"] = base
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _same_job(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keep = ("config", "resolved", "base")
    return {k: a.get(k) for k in keep} == {k: b.get(k) for k in keep}


def merge_adapter(*, base: str, adapter: Path, out: Path, dtype: str) -> Path:
    """Write the base with the adapter merged in (``PeftModel.merge_and_unload``), loaded unquantised.

    Args:
        base: Folder or cached Hub id of the base model.
        adapter: The adapter folder.
        out: Where the merged model and tokenizer go.
        dtype: ``bfloat16`` or ``float32``.

    Returns:
        ``out``.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype))
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _summary_metrics(rows: list[dict[str, Any]], step: int | None) -> dict[str, Any] | None:
    hit = [r for r in rows if step is None or r["step"] == step]
    return hit[-1] if hit else None


def train(
    source_path: str | Path,
    *,
    cfg: TrainConfig,
    runs_dir: Path = Path("runs"),
    out: Path | None = None,
    overwrite: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a LoRA adapter with DPO on the triplets of a run (or a dataset folder or JSONL file).

    Args:
        source_path: Run id or folder, ``datasets`` folder or JSONL file.
        cfg: The job's config (base model, sampling, overrides).
        runs_dir: Where run ids are looked up and bare datasets' outputs go.
        out: Output folder (default: ``<run>/train/<name>``).
        overwrite: Delete an existing job folder of the same name first.
        say: Where progress lines go.

    Returns:
        ``result.json``'s content: paths, steps, wall time, held-out metrics at start and end.

    Raises:
        CoherenceError: Bad data, base model or config, or a finished job of the same name with another config.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    source = tdata.load_source(source_path, runs_dir=runs_dir)
    resolved = resolve(cfg)
    base, _ = resolve_base(cfg.base)
    name = cfg.name or f"{_slug(cfg.base or 'model')}-dpo"
    safe_name(name, what="--name", fix="give a plain name such as smollm2-dpo; use --out for another folder")
    job = output_dir(source, name=name, runs_dir=runs_dir, out=out)
    check_output(job, "train", what="--out" if out is not None else "--name")
    record = _record(cfg, resolved, base=base, source=source)
    from accelerate import PartialState

    state = PartialState()  # under `accelerate launch`, only the main process writes the job's files
    if overwrite and state.is_main_process:
        remove_owned(job, "train", what="--out" if out is not None else "--name")
    state.wait_for_everyone()
    if job.exists() and (job / "train_config.json").is_file():
        before = json.loads((job / "train_config.json").read_text(encoding="utf-8"))
        if not _same_job(before, record):
            raise CoherenceError(f"{job}: holds a job with another config (fix: --name NEW for a new job, or "
                                 f"--overwrite to replace it)")
        if (job / "result.json").is_file():
            say(f"already trained: {job} (nothing to do; --overwrite to train again)")
            return json.loads((job / "result.json").read_text(encoding="utf-8"))
    if state.is_main_process:
        mark(job, "train")
    for note in resolved.notes:
        say(f"note: {note}")

    split_file = job / "split.json"
    if split_file.is_file():
        split = tdata.from_ids(source.rows, ids=json.loads(split_file.read_text(encoding="utf-8")),
                              where=split_file)
    else:  # deterministic: every process computes the same split
        split = tdata.split(source.rows, max_triplets=cfg.max_triplets, eval_size=cfg.eval_size, seed=cfg.seed)
        if state.is_main_process:
            split_file.write_text(json.dumps(split.ids(), indent=1), encoding="utf-8")
            with (job / "heldout.jsonl").open("w", encoding="utf-8") as fh:
                for row in split.heldout:
                    fh.write(json.dumps({k: row.get(k) for k in ("id", "domain", "subcategory", "pack", "prompt",
                                                                 "chosen", "rejected")}, ensure_ascii=False) + "\n")
    if state.is_main_process:
        (job / "train_config.json").write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    say(f"train {name}: {len(split.train)} triplets, {len(split.heldout)} held out; base {cfg.base} "
        f"({'QLoRA 4-bit' if resolved.quantized else 'LoRA'} on {resolved.device}) -> {job}/")

    from transformers.trainer_utils import get_last_checkpoint
    from transformers.utils import logging as hf_logging

    import datasets

    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()  # TRL's tokenising bars; its training bar stays
    started = time.monotonic()
    trainer = build_trainer(base=base, resolved=resolved, split=split, out_dir=job)
    ckpt_dir = job / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last:
        say(f"resuming from {last}")
    elif split.heldout:
        trainer.evaluate()  # held-out metrics before any step (logged at step 0)
    trainer.train(resume_from_checkpoint=last)
    if split.heldout:
        trainer.evaluate()
    steps = int(trainer.state.global_step)
    adapter = job / "adapter"
    trainer.save_model(str(adapter))
    trainer.processing_class.save_pretrained(str(adapter))
    if state.is_main_process:
        _name_base(adapter / "adapter_config.json", record["base_hub_id"])
    wall = round(time.monotonic() - started, 1)
    if not state.is_main_process:
        return {"name": name, "job": str(job), "adapter": str(adapter), "steps": steps}

    metrics = collect(job / "metrics.jsonl")
    (job / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    plot(metrics, out=job / "metrics.png", title=f"{name}: DPO on {source.path.name} ({cfg.base})")
    result: dict[str, Any] = {
        "name": name, "job": str(job), "adapter": str(adapter), "steps": steps,
        "wall_seconds_this_invocation": wall, "resumed_from": last,
        "train_triplets": len(split.train), "heldout_triplets": len(split.heldout), "per_domain": split.per_domain,
        "heldout_start": _summary_metrics(metrics["eval"], 0),
        "heldout_end": _summary_metrics(metrics["eval"], steps),
        "train_last": _summary_metrics(metrics["train"], None),
        "merged": None, "notes": resolved.notes,
    }
    del trainer
    if cfg.merge:
        say("merging the adapter into the base")
        result["merged"] = str(merge_adapter(base=base, adapter=adapter, out=job / "merged",
                                             dtype="bfloat16" if resolved.device == "cuda" else "float32"))
    card = model_card(result, record=record)
    (job / "README.md").write_text(card, encoding="utf-8")
    (adapter / "README.md").write_text(card, encoding="utf-8")
    (job / "result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result
