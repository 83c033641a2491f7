"""Capability through lm-evaluation-harness on a tiny local task with local:smollm2 (base and base+adapter),
offline; a re-run runs nothing; unknown tasks and uncached datasets fail in one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from coherence.errors import CoherenceError

pytest.importorskip("lm_eval")
from coherence.evaluate import capability  # noqa: E402

ROOT = Path(__file__).parent.parent
TASKS = ROOT / "tests" / "data" / "lm_eval_tasks"


def test_model_args_for_specs(tmp_path):
    assert capability.hf_model_args("local:smollm2")["pretrained"].endswith("smollm2-135m-instruct")
    adapter = tmp_path / "job" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    args = capability.hf_model_args(f"local:smollm2+{adapter.parent}")
    assert args["peft"] == str(adapter.resolve())
    (tmp_path / "job" / "train_config.json").write_text(json.dumps({"base": {"spec": "local:smollm2"}}))
    assert capability.hf_model_args(str(tmp_path / "job")) == args
    with pytest.raises(CoherenceError, match="no adapter_config.json"):
        capability.hf_model_args(f"local:smollm2+{tmp_path}")
    with pytest.raises(CoherenceError, match="need local weights"):
        capability.hf_model_args("offline:policy")


def _random_adapter(folder: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(capability.hf_model_args("local:smollm2")["pretrained"])
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    peft.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_lm_eval_on_a_tiny_local_task(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the task YAML's data file is relative to the repository root
    out = tmp_path / "cap"
    base = capability.run("local:smollm2", ["coherence_tiny"], limit=4, out_dir=out, task_dirs=[TASKS])
    assert base["n"] == {"coherence_tiny": 4} and 0 <= base["results"]["coherence_tiny"]["acc"] <= 1
    assert base["versions"]["lm_eval"] and "peft" not in base["hf_args"]
    rows = capability.metric_rows(base, label="base")
    assert rows[0]["metric"] == "coherence_tiny/acc" and rows[0]["n"] == 4 and rows[0]["model"] == "base"
    assert Path(base["file"]).is_file()

    # a re-run returns the stored result and starts no lm-eval process
    def no_child(*a, **k):
        raise AssertionError("a re-run must not run lm-eval")

    monkeypatch.setattr(subprocess, "run", no_child)
    assert capability.run("local:smollm2", ["coherence_tiny"], limit=4, out_dir=out, task_dirs=[TASKS]) == base
    monkeypatch.undo()
    monkeypatch.chdir(ROOT)

    adapter = _random_adapter(tmp_path / "adapter")
    tuned = capability.run(f"local:smollm2+{adapter}", ["coherence_tiny"], limit=4, out_dir=out, task_dirs=[TASKS])
    assert tuned["hf_args"]["peft"] == str(adapter.resolve()) and tuned["n"] == {"coherence_tiny": 4}
    assert tuned["file"] != base["file"]


@pytest.mark.slow
def test_unknown_task_and_uncached_dataset_are_one_line(tmp_path):
    with pytest.raises(CoherenceError, match=r"'coherence_tinny'.*did you mean coherence_tiny"):
        capability.run("local:smollm2", ["coherence_tinny"], limit=1, out_dir=tmp_path, task_dirs=[TASKS])
    with pytest.raises(CoherenceError) as err:
        capability.run("local:smollm2", ["haerae_general_knowledge"], limit=1, out_dir=tmp_path)
    msg = str(err.value)
    assert "not in the local Hugging Face cache" in msg and "HF_DATASETS_OFFLINE=0" in msg
    assert "load_task_or_group(['haerae_general_knowledge'])" in msg and "\n" not in msg
