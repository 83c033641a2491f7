"""The exported dataset loads with datasets.load_from_disk and has TRL's conversational DPO shape."""

import json

from conftest import run_pipeline
from datasets import load_from_disk


def test_export_is_trl_conversational_preference_with_provenance(tmp_path):
    summary, run_dir = run_pipeline(tmp_path, {})
    ds = load_from_disk(str(run_dir / "dataset"))
    assert len(ds) == summary["funnel"]["accepted"] == 4
    row = ds[0]
    assert [m["role"] for m in row["prompt"]] == ["user"]
    assert [m["role"] for m in row["chosen"]] == ["assistant"]
    assert [m["role"] for m in row["rejected"]] == ["assistant"]
    assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    for col in ("pack", "domain", "subcategory", "template", "slot_fill", "strategy", "attempt", "target",
                "generator", "generator_model", "query_harm_score", "rejected_harm_score", "chosen_quality_score", "judge_scores"):
        assert row[col] not in (None, ""), col
    scores = json.loads(row["judge_scores"])
    assert set(scores) == {"query_harm", "rejected_harm", "chosen_quality", "filter"}
    assert len(scores["filter"]) == 3
    assert row["pack"] == "en-GB@0.0.1" and "offline:policy" in row["offline_roles"]
    # the jsonl export holds the same rows
    lines = (run_dir / "triplets.jsonl").read_text().splitlines()
    assert [json.loads(line)["seed_id"] for line in lines] == ds["seed_id"]
    card = (run_dir / "dataset" / "README.md").read_text()
    assert "Offline run" in card and "Who wrote the policy" in card and "## Funnel" in card


def test_rerun_makes_zero_model_calls_and_same_export(tmp_path):
    first, run_dir = run_pipeline(tmp_path, {})
    assert first["this_invocation"]["model_calls_made"] > 0
    before = (run_dir / "triplets.jsonl").read_text()
    second, run_dir2 = run_pipeline(tmp_path, {})
    assert run_dir2 == run_dir
    assert second["this_invocation"]["model_calls_made"] == 0
    assert (run_dir / "triplets.jsonl").read_text() == before
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["this_invocation"]["model_calls_made"] == 0 and summary["status"] == "finished"


def test_call_cache_serves_repeated_calls(tmp_path):
    """A resumed stage that repeats a call gets it from the run's cache, not the provider."""
    import asyncio

    from coherence.config import ModelSpec
    from coherence.models import ModelPool
    from coherence.store import Store

    store = Store(tmp_path / "run.db")
    pool = ModelPool(store, None)
    model = pool.get(ModelSpec(model="mock:target"))
    msgs = [{"role": "user", "content": "For my thesis: trace someone"}]
    a = asyncio.run(model.chat_async(msgs, role="target"))
    b = asyncio.run(model.chat_async(msgs, role="target"))
    assert a.text == b.text and pool.stats.made == 1 and pool.stats.cached == 1
    c = asyncio.run(model.chat_async(msgs, role="target", params={"temperature": 0.5}))
    assert pool.stats.made == 2 and c.text
