"""DPO training with TRL + PEFT (QLoRA with bitsandbytes on CUDA, plain LoRA elsewhere) and
side-by-side generation with base and tuned models. Heavy libraries are imported inside functions."""

from coherence.train.config import TrainConfig, load_train_config, resolve

__all__ = ["TrainConfig", "load_train_config", "resolve"]
