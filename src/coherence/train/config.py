"""Training configuration: the paper's QLoRA DPO recipe as defaults, in one place.

Settings apply in the order: the defaults below, then the ``--config`` YAML, then CLI flags
(``--set dpo.learning_rate=1e-4`` reaches any TRL ``DPOConfig``, PEFT ``LoraConfig`` or
transformers ``BitsAndBytesConfig`` field). The defaults of the paper (arXiv 2606.06797, section 4):
QLoRA with 4-bit NF4 weights and bf16 compute, LoRA on all attention and MLP projections, r=16,
alpha=16, dropout 0.05, 10,000 triplets balanced across the five top-level domains. The paper does not
give the optimiser settings; ours are marked as such below.

Without CUDA, training falls back to plain LoRA in float32 with ``CPU_DPO_DEFAULTS`` sized to finish in
minutes on 2 cores, and says so (bitsandbytes' CPU 4-bit path is opt-in: ``quantization: 4bit``).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from coherence.config import load_layered, parse_set  # noqa: F401  (parse_set: re-exported for the CLI)
from coherence.errors import ConfigError

#: QLoRA quantisation (paper: 4-bit NF4, bf16 compute). Double quantisation is the QLoRA paper's default.
QUANT_DEFAULTS: dict[str, Any] = {
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_compute_dtype": "bfloat16",
    "bnb_4bit_use_double_quant": True,
}

#: LoRA (paper: all attention and MLP projections, r=16, alpha=16, dropout 0.05). PEFT's ``all-linear``
#: is every linear layer but the output head: q/k/v/o and gate/up/down on Llama, Qwen, Gemma, Kanana, and
#: the differently named projections of EXAONE, without listing names per architecture.
LORA_DEFAULTS: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
    "bias": "none",
    "task_type": "CAUSAL_LM",
}

#: TRL ``DPOConfig`` settings on CUDA. Not given by the paper (ours): sigmoid DPO, beta 0.1, one epoch,
#: LoRA-sized learning rate, effective batch 16, bf16, gradient checkpointing.
DPO_DEFAULTS: dict[str, Any] = {
    "beta": 0.1,
    "loss_type": ["sigmoid"],
    "learning_rate": 5e-5,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.1,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 4,
    "gradient_accumulation_steps": 4,
    "max_length": 1024,
    "bf16": True,
    "gradient_checkpointing": True,
    "logging_steps": 10,
    "eval_strategy": "steps",
    "eval_steps": 100,
    "save_strategy": "steps",
    "save_steps": 100,
    "save_total_limit": 2,
    "report_to": "none",
}

#: Applied over ``DPO_DEFAULTS`` when training without CUDA: a few-minute run of a small model on 2 cores,
#: chosen with ``coherence eval`` (docs/evaluation.md, "Choosing the CPU training recipe"). Sigmoid DPO
#: raises the likelihood of r+, Korean policy prose that an English 135M model cannot write, and its tuned
#: SmolLM2 wrote Korean-looking gibberish (lr 1e-4, beta 0.5: safe rate -0.045, degenerate +0.064 on 156
#: held-out prompts). APO-down (``apo_down``: lowers both answers' likelihood, r- more) at lr 5e-5 and
#: beta 0.1 moved both by noise-sized amounts over six trainings (mean safe +0.013, degenerate +0.010) while
#: attack success fell on each and benign refusals rose by 0.14: the closest of the 13 recipes tried to
#: "safe rate up, no more degenerate", on heuristic judges, not a safety finding.
CPU_DPO_DEFAULTS: dict[str, Any] = {
    "loss_type": ["apo_down"],
    "beta": 0.1,
    "learning_rate": 5e-5,
    "warmup_steps": 0,
    "lr_scheduler_type": "constant",
    "num_train_epochs": 1,
    "per_device_train_batch_size": 2,
    "per_device_eval_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_length": 384,
    "bf16": False,
    "gradient_checkpointing": False,
    "use_cpu": True,
    "logging_steps": 1,
    "eval_steps": 10,
    "save_steps": 10,
    "dataloader_num_workers": 0,
    # the reference (base) log-probs are computed once, not once per epoch
    "precompute_ref_log_probs": True,
}

#: Keys we set from our own fields; overriding them in ``dpo`` would desynchronise outputs and resume.
_OWNED_DPO_KEYS = ("output_dir", "seed")


class TrainConfig(BaseModel):
    """One training job: base model, data sampling, and overrides of the recipe."""

    model_config = ConfigDict(extra="forbid")

    base: str | None = None
    """Base model: ``local:smollm2`` (the bundled GGUF, converted once), a Hugging Face id already in the
    local cache (e.g. ``Qwen/Qwen2.5-7B-Instruct``), or a model folder."""
    name: str | None = None
    """Name of the output folder ``<run>/train/<name>/`` (default: from the base model)."""
    max_triplets: int = Field(default=10_000, ge=2)
    """Triplets sampled in all (train + held-out), balanced across domains (paper: 10,000)."""
    eval_size: float = Field(default=0.1, ge=0)
    """Held-out slice for DPO eval: a fraction (< 1) of the sampled triplets, or a count (>= 1).
    At least one triplet is held out when there are two or more."""
    seed: int = 0
    """Seed of the sampling, the split, LoRA initialisation and training."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """``auto``: CUDA when available, else CPU."""
    quantization: Literal["auto", "4bit", "none"] = "auto"
    """``auto``: QLoRA 4-bit on CUDA, plain LoRA elsewhere. ``4bit`` without CUDA uses bitsandbytes' CPU
    NF4 path (it trains, but slower than float32 LoRA: use it to save memory). Needs ``bitsandbytes``."""
    quantization_config: dict[str, Any] = Field(default_factory=dict)
    """Overrides of ``QUANT_DEFAULTS`` (any ``transformers.BitsAndBytesConfig`` argument)."""
    lora: dict[str, Any] = Field(default_factory=dict)
    """Overrides of ``LORA_DEFAULTS`` (any ``peft.LoraConfig`` field)."""
    dpo: dict[str, Any] = Field(default_factory=dict)
    """Overrides of ``DPO_DEFAULTS`` (+ ``CPU_DPO_DEFAULTS`` without CUDA): any ``trl.DPOConfig`` field."""
    model_init_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra ``from_pretrained`` arguments (``attn_implementation``, ``revision``, ``device_map``...)."""
    merge: bool = False
    """Also write the base model with the adapter merged into ``merged/``."""

    @field_validator("quantization_config", "lora", "dpo", "model_init_kwargs")
    @classmethod
    def _exponents_are_numbers(cls, value: dict[str, Any]) -> dict[str, Any]:
        # PyYAML reads `5e-5` (no dot) as a string; every library here means a number
        return {k: float(v) if isinstance(v, str) and _EXPONENT.match(v) else v for k, v in value.items()}


_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


@dataclasses.dataclass
class Resolved:
    """What a job will actually run with, after defaults, YAML, flags and the device are applied."""

    device: str
    """``cuda`` or ``cpu``."""
    quantized: bool
    """QLoRA (4-bit base) or plain LoRA."""
    quantization: dict[str, Any] | None
    """``BitsAndBytesConfig`` arguments, None without quantisation."""
    lora: dict[str, Any]
    """``LoraConfig`` arguments."""
    dpo: dict[str, Any]
    """``DPOConfig`` arguments (without ``output_dir``)."""
    model_init_kwargs: dict[str, Any]
    """``from_pretrained`` arguments (dtype, device map...)."""
    notes: list[str]
    """What was decided for the user, e.g. the CPU fallback; printed and written to the model card."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_train_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then ``overrides`` (dotted keys such as ``dpo.beta``).

    Args:
        path: A YAML file with ``TrainConfig`` fields, or None.
        overrides: Dotted keys to values; None sets a field to null (leave out the flags not given).

    Returns:
        The validated config.

    Raises:
        ConfigError: The file is missing or malformed, or a field is invalid.
    """
    return load_layered(TrainConfig, path, overrides, missing_fix="check the path; see configs/train-*.yaml",
                        start="'dpo:' or 'lora:'", section="train", fields_at="coherence/train/config.py")


def _check_keys(given: dict[str, Any], allowed: set[str], *, section: str, owner: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}: not a field of {owner} (fix: see {owner}'s documentation; "
                          f"fields include {', '.join(sorted(allowed)[:12])}, ...)")


def _dpo_fields() -> set[str]:
    from trl import DPOConfig

    return {f.name for f in dataclasses.fields(DPOConfig)}


def _lora_fields() -> set[str]:
    from peft import LoraConfig

    return {f.name for f in dataclasses.fields(LoraConfig)}


def _quant_fields() -> set[str]:
    import inspect

    from transformers import BitsAndBytesConfig

    return set(inspect.signature(BitsAndBytesConfig.__init__).parameters) - {"self", "kwargs"}


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve(cfg: TrainConfig, *, cuda: bool | None = None) -> Resolved:
    """Apply the defaults, the device fallback and the overrides; check every key against TRL/PEFT.

    Args:
        cfg: The job's config.
        cuda: Whether CUDA is available (None: ask torch). Tests pass it to check the CUDA path on CPU.

    Returns:
        The resolved settings.

    Raises:
        ConfigError: An override names a field the library does not have, or asks for what the device
            cannot do.
    """
    has_cuda = cuda_available() if cuda is None else cuda
    notes: list[str] = []
    if cfg.device == "cuda" and not has_cuda:
        raise ConfigError("device: cuda was asked for but torch sees no CUDA device (fix: --device auto, or "
                          "install a CUDA build of torch)")
    device = "cuda" if (cfg.device == "cuda" or (cfg.device == "auto" and has_cuda)) else "cpu"
    quantized = cfg.quantization == "4bit" or (cfg.quantization == "auto" and device == "cuda")
    if quantized and device != "cuda":
        notes.append("quantization: 4bit without CUDA: bitsandbytes' CPU NF4 path (measured on SmolLM2-135M: it "
                     "trains, with the loss curve of float32 LoRA, but 1.5x slower per step; it saves memory only)")
    _check_keys(cfg.quantization_config, _quant_fields(), section="quantization_config", owner="BitsAndBytesConfig")
    _check_keys(cfg.lora, _lora_fields(), section="lora", owner="peft.LoraConfig")
    _check_keys(cfg.dpo, _dpo_fields(), section="dpo", owner="trl.DPOConfig")
    owned = sorted(set(cfg.dpo) & set(_OWNED_DPO_KEYS))
    if owned:
        raise ConfigError(f"dpo.{owned[0]}: set by coherence (fix: use --name / --out for the output folder and "
                          f"the top-level `seed` field)")
    dpo = dict(DPO_DEFAULTS)
    if device == "cpu":
        dpo.update(CPU_DPO_DEFAULTS)
        if cfg.quantization == "auto":
            notes.append("no CUDA: plain LoRA on a float32 base instead of QLoRA (4-bit NF4 needs bitsandbytes on "
                         "CUDA); CPU-sized defaults: "
                         + ", ".join(f"{k}={_shown(CPU_DPO_DEFAULTS[k])}"
                                     for k in ("loss_type", "learning_rate", "beta", "num_train_epochs",
                                               "per_device_train_batch_size", "max_length")))
    dpo.update(cfg.dpo)
    dpo["seed"] = cfg.seed
    quant = None
    if quantized:
        # bf16 compute is the paper's (CUDA); the CPU 4-bit kernels compute in float32
        quant = {**QUANT_DEFAULTS, **({"bnb_4bit_compute_dtype": "float32"} if device == "cpu" else {}),
                 **cfg.quantization_config}
    if not quantized and cfg.quantization == "none" and device == "cuda":
        notes.append("quantization: none: plain LoRA on a bf16 base (not the paper's QLoRA)")
    init: dict[str, Any] = {"dtype": "bfloat16" if device == "cuda" else "float32"}
    if quantized and device == "cuda":
        # one full copy of the quantised base per process (``accelerate launch`` sets LOCAL_RANK)
        init["device_map"] = "local_process"
    init.update(cfg.model_init_kwargs)
    return Resolved(device=device, quantized=quantized, quantization=quant, lora={**LORA_DEFAULTS, **cfg.lora},
                    dpo=dpo, model_init_kwargs=init, notes=notes)


def _shown(value: Any) -> str:
    return "+".join(map(str, value)) if isinstance(value, list) else str(value)


def bnb_config(quant: dict[str, Any]) -> Any:
    """A ``transformers.BitsAndBytesConfig`` from resolved arguments (dtype names become torch dtypes)."""
    import torch
    from transformers import BitsAndBytesConfig

    kwargs = dict(quant)
    for key in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = getattr(torch, kwargs[key])
    return BitsAndBytesConfig(**kwargs)


def lora_config(lora: dict[str, Any]) -> Any:
    """A ``peft.LoraConfig`` from resolved arguments."""
    from peft import LoraConfig

    return LoraConfig(**lora)


def dpo_config(dpo: dict[str, Any], *, output_dir: Path) -> Any:
    """A ``trl.DPOConfig`` writing its checkpoints under ``output_dir``."""
    from trl import DPOConfig

    kwargs = dict(dpo)
    fields = _dpo_fields()
    # transformers >= 5.24 renamed gradient_checkpointing (kept as a deprecated alias)
    if "activation_checkpointing" in fields and "gradient_checkpointing" in kwargs \
            and "activation_checkpointing" not in kwargs:
        kwargs["activation_checkpointing"] = kwargs.pop("gradient_checkpointing")
    return DPOConfig(output_dir=str(output_dir), **kwargs)
