"""Training config resolution on its own: the paper's defaults, the CUDA/QLoRA path (checked without
CUDA), the CPU fallback, overrides from YAML and flags, and balanced sampling."""

import pytest

from coherence.errors import CoherenceError, ConfigError
from coherence.train.config import load_train_config, parse_set, resolve

pytest.importorskip("trl")


def test_cuda_resolves_to_the_papers_qlora_recipe():
    import torch

    from coherence.train.config import bnb_config, lora_config

    r = resolve(load_train_config(None, {"base": "local:smollm2"}), cuda=True)
    assert r.device == "cuda" and r.quantized and r.notes == []
    bnb = bnb_config(r.quantization)
    assert bnb.load_in_4bit and not bnb.load_in_8bit
    assert bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_compute_dtype == torch.bfloat16
    assert bnb.bnb_4bit_use_double_quant
    lora = lora_config(r.lora)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (16, 16, 0.05)
    assert lora.target_modules == "all-linear" and lora.task_type == "CAUSAL_LM"
    assert r.dpo["bf16"] is True and r.dpo["gradient_checkpointing"] is True and "use_cpu" not in r.dpo
    assert r.model_init_kwargs == {"dtype": "bfloat16", "device_map": "local_process"}
    cfg = load_train_config(None, {})
    assert cfg.max_triplets == 10_000


def test_cpu_falls_back_to_plain_lora_and_says_so(tmp_path):
    from coherence.train.config import dpo_config

    r = resolve(load_train_config(None, {}), cuda=False)
    assert r.device == "cpu" and not r.quantized and r.quantization is None
    assert r.dpo["use_cpu"] and r.dpo["bf16"] is False and r.dpo["max_length"] == 384
    assert "no CUDA: plain LoRA" in r.notes[0]
    args = dpo_config(r.dpo, output_dir=tmp_path)
    assert args.beta == 0.1 and args.learning_rate == 5e-5 and args.num_train_epochs == 1 and args.use_cpu and not args.bf16 and not args.gradient_checkpointing
    # the CPU recipe is APO-down (docs/evaluation.md); CUDA keeps the paper's sigmoid DPO
    assert list(args.loss_type) == ["apo_down"] and "loss_type=apo_down" in r.notes[0]
    assert resolve(load_train_config(None, {}), cuda=True).dpo["loss_type"] == ["sigmoid"]
    # bitsandbytes' CPU 4-bit is opt-in, computes in float32 and is announced
    q = resolve(load_train_config(None, {"quantization": "4bit"}), cuda=False)
    assert q.quantized and q.quantization["bnb_4bit_compute_dtype"] == "float32"
    assert q.quantization["bnb_4bit_quant_type"] == "nf4" and "device_map" not in q.model_init_kwargs
    assert "CPU NF4" in q.notes[-1]
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve(load_train_config(None, {"device": "cuda"}), cuda=False)


def test_overrides_apply_defaults_then_yaml_then_flags(tmp_path):
    f = tmp_path / "train.yaml"
    f.write_text("max_triplets: 500\nlora: {r: 8, target_modules: [q_proj, v_proj]}\n"
                 "dpo: {beta: 0.3, learning_rate: 1.0e-5}\nquantization_config: {bnb_4bit_use_double_quant: false}\n")
    flags = parse_set(["dpo.beta=0.5", "dpo.loss_type=[ipo]", "lora.lora_dropout=0.1"])
    assert flags == {"dpo.beta": 0.5, "dpo.loss_type": ["ipo"], "lora.lora_dropout": 0.1}
    r = resolve(load_train_config(f, flags), cuda=True)
    assert r.lora["r"] == 8 and r.lora["lora_alpha"] == 16 and r.lora["target_modules"] == ["q_proj", "v_proj"]
    assert r.lora["lora_dropout"] == 0.1
    assert r.dpo["beta"] == 0.5 and r.dpo["learning_rate"] == 1e-5 and r.dpo["loss_type"] == ["ipo"]
    assert r.quantization["bnb_4bit_use_double_quant"] is False and r.quantization["bnb_4bit_quant_type"] == "nf4"
    assert load_train_config(f, {}).max_triplets == 500
    # PyYAML reads 5e-5 as a string; the config makes it the number every library expects
    assert load_train_config(None, parse_set(["dpo.learning_rate=5e-5"])).dpo["learning_rate"] == 5e-5
    # a user override beats the CPU defaults
    assert resolve(load_train_config(None, {"dpo.max_length": 128}), cuda=False).dpo["max_length"] == 128


def test_unknown_keys_name_the_field_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"dpo\.betta: not a field of trl.DPOConfig"):
        resolve(load_train_config(None, {"dpo.betta": 1}), cuda=False)
    with pytest.raises(ConfigError, match=r"lora\.rank: not a field of peft.LoraConfig"):
        resolve(load_train_config(None, {"lora.rank": 4}), cuda=False)
    with pytest.raises(ConfigError, match="BitsAndBytesConfig"):
        resolve(load_train_config(None, {"quantization_config.bits": 4}), cuda=True)
    with pytest.raises(ConfigError, match="dpo.output_dir: set by coherence"):
        resolve(load_train_config(None, {"dpo.output_dir": "x"}), cuda=False)
    with pytest.raises(ConfigError, match="max_triplets"):
        load_train_config(None, {"max_triplets": 1})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["beta"])


def _rows(counts):
    return [{"id": f"{d}-{i}", "domain": d, "prompt": "q", "chosen": "a", "rejected": "b"}
            for d, n in counts.items() for i in range(n)]


def test_balanced_sampling_and_heldout_split():
    from coherence.train.data import balanced_sample, split

    rows = _rows({"privacy": 40, "elections": 3, "crime": 20, "defamation": 10, "hate": 0})
    s = balanced_sample(rows, limit=20, seed=0)
    per = {d: sum(r["domain"] == d for r in s) for d in ("privacy", "elections", "crime", "defamation")}
    # elections has only 3; its share goes to the others, which stay within one of each other
    assert per["elections"] == 3 and sorted(per.values()) == [3, 5, 6, 6]
    assert balanced_sample(rows, limit=20, seed=0) == s  # fixed seed
    assert balanced_sample(rows, limit=20, seed=1) != s
    assert len(balanced_sample(rows, limit=1000, seed=0)) == 73
    sp = split(rows, max_triplets=40, eval_size=0.1, seed=0)
    assert len(sp.train) == 36 and len(sp.heldout) == 4
    assert {r["domain"] for r in sp.heldout} == {"privacy", "elections", "crime", "defamation"}
    assert not {r["id"] for r in sp.train} & {r["id"] for r in sp.heldout}
    assert sp.per_domain["elections"] == {"available": 3, "train": 2, "heldout": 1}
    assert len(split(rows[:2], max_triplets=10, eval_size=0.1, seed=0).heldout) == 1
    with pytest.raises(CoherenceError, match="at least 2"):
        split(rows[:1], max_triplets=10, eval_size=0.1, seed=0)


def test_base_resolution_is_offline_and_names_the_fix(tmp_path, monkeypatch):
    from coherence.train.base import resolve_base

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CoherenceError, match="hf download nobody/missing-model"):
        resolve_base("nobody/missing-model")
    with pytest.raises(CoherenceError, match="--base"):
        resolve_base(None)
    (tmp_path / "m").mkdir()
    with pytest.raises(CoherenceError, match="no config.json"):
        resolve_base(str(tmp_path / "m"))


def test_generate_reads_prompts_and_model_specs(tmp_path, en_gb):
    import json

    from coherence.train.generate import load_prompts, parse_model

    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"id": "a", "prompt": "hello"}) + "\n"
                 + json.dumps({"prompt": [{"role": "user", "content": "hi"}]}) + "\n"
                 + json.dumps({"id": "probe", "framed": "benign?"}) + "\n")
    rows = load_prompts(str(f))
    assert [r["id"] for r in rows] == ["a", "1", "probe"]
    assert rows[0]["messages"] == [{"role": "user", "content": "hello"}] and rows[2]["messages"][0]["content"] == "benign?"
    pack_rows = load_prompts(f"pack:{en_gb}", limit=2)
    assert len(pack_rows) == 2 and pack_rows[0]["messages"][0]["role"] == "user"
    with pytest.raises(CoherenceError, match="no such prompts file"):
        load_prompts(str(tmp_path / "nope.jsonl"))
    assert parse_model("local:smollm2") == ("local:smollm2", None)
    adapter = tmp_path / "job" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    assert parse_model(f"local:smollm2+{adapter.parent}") == ("local:smollm2", adapter)
    (adapter.parent / "train_config.json").write_text(json.dumps({"base": {"spec": "local:smollm2"}}))
    assert parse_model(str(adapter.parent)) == ("local:smollm2", adapter)
    with pytest.raises(CoherenceError, match="adapter_config.json"):
        parse_model(f"local:smollm2+{tmp_path}")
