"""`coherence eval --model` arguments and run folders, resolved offline (nothing is loaded)."""

import json

import pytest

from coherence.errors import CoherenceError
from coherence.evaluate.specs import resolve, resolve_all, run_models


def _job(tmp_path, name="smollm2-dpo"):
    job = tmp_path / "run" / "train" / name
    (job / "adapter").mkdir(parents=True)
    (job / "adapter" / "adapter_config.json").write_text("{}")
    (job / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    (job / "train_config.json").write_text(json.dumps({"base": {"spec": "local:smollm2"}}))
    return job


def test_model_arguments(tmp_path):
    job = _job(tmp_path)
    m = resolve(str(job), max_tokens=64)
    assert m.label == "smollm2-dpo" and m.spec.model == f"local:smollm2+{(job / 'adapter').resolve()}"
    assert m.spec.params["adapter"].startswith("sha256:") and m.spec.max_concurrency == 32
    same = resolve(f"tuned=local:smollm2+{job / 'adapter'}", max_tokens=64)
    assert same.label == "tuned" and same.spec.model == m.spec.model and same.spec.params == m.spec.params
    remote = resolve("hosted_vllm/qwen@http://localhost:8000/v1", max_tokens=64)
    assert remote.spec.model == "hosted_vllm/qwen" and remote.spec.api_base == "http://localhost:8000/v1"
    assert resolve("openai/gpt-4.1", max_tokens=64).spec.model == "openai/gpt-4.1"
    assert [m.label for m in resolve_all(["local:smollm2", "local:smollm2"], max_tokens=64)] == ["smollm2", "smollm2#2"]


def test_a_retrained_adapter_changes_the_cache_key(tmp_path):
    job = _job(tmp_path)
    before = resolve(str(job), max_tokens=64).spec.params["adapter"]
    (job / "adapter" / "adapter_model.safetensors").write_bytes(b"other weights")
    assert resolve(str(job), max_tokens=64).spec.params["adapter"] != before


def test_run_folder_is_its_target_and_every_adapter(tmp_path):
    _job(tmp_path, "a")
    _job(tmp_path, "b")
    (tmp_path / "run" / "config.yaml").write_text("roles:\n  target:\n    model: local:smollm2\n")
    models = run_models(tmp_path / "run", max_tokens=64)
    assert models[0] == "base=local:smollm2" and [m.rsplit("/", 1)[-1] for m in models[1:]] == ["a", "b"]


def test_bad_specs_name_the_fix(tmp_path):
    with pytest.raises(CoherenceError, match="no adapter_config.json"):
        resolve(f"local:smollm2+{tmp_path}", max_tokens=64)
    (tmp_path / "config.yaml").write_text("roles:\n  target:\n    model: local:smollm2\n")
    with pytest.raises(CoherenceError, match="no trained adapter"):
        run_models(tmp_path, max_tokens=64)
