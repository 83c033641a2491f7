"""`coherence train`: a tiny randomly initialised Llama trained for a few DPO steps on an exported run,
the adapter reloaded and its outputs compared; resume after a kill; `generate` side by side."""

import json
import re
from pathlib import Path

import pytest
from conftest import run_pipeline

pytest.importorskip("trl")
pytest.importorskip("peft")

SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


def tiny_llama(folder: Path, texts: list[str]) -> Path:
    """A 2-layer, hidden-32 Llama with a word-level tokenizer over ``texts``, built here, nothing downloaded."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for text in texts:
        for w in _words(text):
            vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", additional_special_tokens=SPECIALS[4:])
    tok.chat_template = CHAT
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=1, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def exported_run(tmp_path):
    summary, run_dir = run_pipeline(tmp_path, {})
    assert summary["funnel"]["accepted"] == 4
    rows = [json.loads(line) for line in (run_dir / "triplets.jsonl").read_text().splitlines()]
    texts = [m["content"] for r in rows for k in ("prompt", "chosen", "rejected") for m in r[k]]
    return run_dir, tiny_llama(tmp_path / "tiny-llama", texts)


FAST = {"dpo.num_train_epochs": 3, "dpo.learning_rate": 5e-3, "dpo.max_length": 256, "dpo.save_steps": 2,
        "dpo.eval_steps": 2, "dpo.per_device_train_batch_size": 1, "eval_size": 1, "lora.lora_dropout": 0.0}


def test_train_changes_outputs_and_metrics_and_generate_compares(exported_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from coherence.train.config import load_train_config
    from coherence.train.generate import generate, load_prompts
    from coherence.train.trainer import train

    run_dir, base = exported_run
    cfg = load_train_config(None, {"base": str(base), "name": "tiny", "merge": True, **FAST})
    lines: list[str] = []
    result = train(run_dir, cfg=cfg, say=lines.append)
    job = run_dir / "train" / "tiny"
    assert Path(result["job"]) == job and any("no CUDA: plain LoRA" in s for s in lines)
    # 3 train triplets x 3 epochs at batch 1
    assert result["steps"] == 9 and result["train_triplets"] == 3 and result["heldout_triplets"] == 1
    for f in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "train_config.json", "split.json",
              "heldout.jsonl", "metrics.jsonl", "metrics.json", "metrics.png", "README.md", "result.json",
              "merged/config.json"):
        assert (job / f).is_file(), f
    split = json.loads((job / "split.json").read_text())
    ids = [json.loads(x)["seed_id"] for x in (run_dir / "triplets.jsonl").read_text().splitlines()]
    assert sorted(split["train"] + split["heldout"]) == sorted(ids)
    metrics = json.loads((job / "metrics.json").read_text())
    assert [r["step"] for r in metrics["train"]] == list(range(1, 10))
    start, end = result["heldout_start"], result["heldout_end"]
    assert start["step"] == 0 and end["step"] == 9
    assert abs(start["rewards/margins"]) < 1e-6  # adapter B=0 at start: policy == reference
    assert end["rewards/margins"] != start["rewards/margins"] and end["loss"] != start["loss"]
    assert metrics["train"][-1]["rewards/margins"] > 0  # it learned to prefer r+ on what it saw
    card = (job / "README.md").read_text()
    assert "en-GB@0.0.1" in card and run_dir.name in card and "r=16" in card and "Offline data" in card
    resolved = json.loads((job / "train_config.json").read_text())["resolved"]
    assert resolved["lora"]["r"] == 16 and resolved["dpo"]["learning_rate"] == 5e-3 and not resolved["quantized"]

    # reload the adapter: its logits differ from the base's; the merged model matches the adapter
    tok = AutoTokenizer.from_pretrained(job / "adapter")
    row = json.loads((job / "heldout.jsonl").read_text().splitlines()[0])
    enc = tok(tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True),
              return_tensors="pt", add_special_tokens=False)
    plain = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        before = plain(**enc).logits
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), job / "adapter")(**enc).logits
        merged = AutoModelForCausalLM.from_pretrained(job / "merged")(**enc).logits
    assert not torch.allclose(before, tuned, atol=1e-4)
    assert torch.allclose(tuned, merged, atol=1e-4)

    # generate: base and tuned side by side on the held-out prompt
    out = generate(str(job), prompts=load_prompts(str(job)), max_new_tokens=8)
    assert len(out) == 1 and set(out[0]) >= {"id", "prompt", "base", "tuned"}

    # a second identical invocation is a no-op
    again = train(run_dir, cfg=cfg, say=lines.append)
    assert again["steps"] == 9 and "already trained" in lines[-1]


def test_resume_after_kill_continues_from_last_checkpoint(exported_run):
    from transformers import TrainerCallback

    from coherence.train import trainer as trainer_mod
    from coherence.train.config import load_train_config

    run_dir, base = exported_run
    cfg = load_train_config(None, {"base": str(base), "name": "resumed", **FAST})

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                raise KeyboardInterrupt

    real = trainer_mod.build_trainer

    def killing(**kw):
        t = real(**kw)
        t.add_callback(Kill())
        return t

    trainer_mod.build_trainer = killing
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer_mod.train(run_dir, cfg=cfg, say=lambda s: None)
    finally:
        trainer_mod.build_trainer = real
    job = run_dir / "train" / "resumed"
    assert (job / "checkpoints" / "checkpoint-4").is_dir() and not (job / "result.json").exists()
    lines: list[str] = []
    result = trainer_mod.train(run_dir, cfg=cfg, say=lines.append)
    assert result["resumed_from"].endswith("checkpoint-4") and result["steps"] == 9
    metrics = json.loads((job / "metrics.json").read_text())
    assert [r["step"] for r in metrics["train"]] == list(range(1, 10))
    assert metrics["eval"][0]["step"] == 0  # the start eval of the killed invocation is kept
