"""--max-cost stops a paid run cleanly before the limit; --resume with a higher limit finishes it, and
the result equals a run that was never stopped."""

import json
import sys

import yaml
from conftest import EN_GB, ROOT, run_pipeline
from typer.testing import CliRunner

from coherence.cli import app

sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

PRICED = ("gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini")


def roles(url):
    # LiteLLM prices these names from its local table; api_base points them at the fake server
    def spec(name):
        return {"model": f"openai/{name}", "api_base": url, "max_concurrency": 4, "params": {"max_tokens": 200}}
    return {"target": spec("gpt-4o-mini"), "attacker": spec("gpt-4.1-nano"), "slot_filler": spec("gpt-4.1-nano"),
            "generators": [spec(m) for m in PRICED[:3]], "query_judge": spec("gpt-4.1-mini"),
            "response_judge": spec("gpt-4.1-mini"), "filter_judges": [spec(m) for m in PRICED[2:]]}


def test_max_cost_stops_then_resume_with_higher_limit_finishes(tmp_path):
    from _common import Server

    with Server(latency=0.0, jailbreak_rate=0.5) as server:
        reference, ref_dir = run_pipeline(tmp_path / "ref", {f"roles.{k}": v for k, v in roles(server.url).items()}
                                          | {"pipeline.seeds_per_template": 2})
        total = reference["all_invocations"]["cost_usd"]
        assert reference["status"] == "finished" and total > 0

        config = tmp_path / "paid.yaml"
        config.write_text(yaml.safe_dump({"pack": str(EN_GB), "roles": roles(server.url),
                                          "pipeline": {"seeds_per_template": 2, "target_count": 4}}))
        runs = tmp_path / "runs"
        limit = round(total / 3, 6)
        cli = CliRunner()
        first = cli.invoke(app, ["run", "--config", str(config), "--runs-dir", str(runs), "--run-id", "paid",
                                 "--max-cost", str(limit), "--quiet"])
        assert first.exit_code == 0, first.output
        summary = json.loads((runs / "paid" / "summary.json").read_text())
        assert summary["status"] == "cost_budget"
        assert 0 < summary["all_invocations"]["cost_usd"] <= limit
        assert "cost budget reached" in first.output and "--resume paid --max-cost" in " ".join(first.output.split())

        second = cli.invoke(app, ["run", "--resume", "paid", "--runs-dir", str(runs), "--max-cost",
                                  str(total * 2), "--quiet"])
        assert second.exit_code == 0, second.output
        summary = json.loads((runs / "paid" / "summary.json").read_text())
        assert summary["status"] == "finished"
        assert abs(summary["all_invocations"]["cost_usd"] - total) < 1e-9  # the same calls, paid once
        assert (runs / "paid" / "triplets.jsonl").read_text() == (ref_dir / "triplets.jsonl").read_text()


def test_unpriced_model_is_named_not_silently_bounded(tmp_path, caplog):
    from _common import Server

    with Server(latency=0.0) as server:
        r = {f"roles.{k}": v for k, v in roles(server.url).items()}
        r["roles.target"] = {"model": "hosted_vllm/my-own-model", "api_base": server.url}
        from coherence.config import load_config
        from coherence.pipeline.runner import prepare_run, run_async
        import asyncio

        cfg = load_config(None, {"pack": str(EN_GB), "runs_dir": str(tmp_path), **r,
                                 "pipeline.seeds_per_template": 1, "pipeline.target_count": 2})
        run_dir, cfg = prepare_run(cfg)
        with caplog.at_level("WARNING"):
            summary = asyncio.run(run_async(cfg, run_dir, max_cost=100.0))
    assert summary["status"] == "finished"
    assert "hosted_vllm/my-own-model: no known price" in caplog.text


def test_run_id_ignores_how_calls_are_made_but_not_what_they_ask():
    """Lower concurrency, a new rate limit, more retries or a price continue the same run; another
    model or generation parameter is another run."""
    from coherence.config import load_config
    from coherence.pipeline.runner import run_id_for

    base = {"pack": str(EN_GB), "roles.target": {"model": "openai/gpt-4o-mini", "api_base": "http://x/v1"}}
    same = run_id_for(load_config(None, base), "digest")
    for spec in ({"max_concurrency": 3}, {"rpm": 60, "tpm": 10_000}, {"max_retries": 1, "timeout": 5},
                 {"limit_group": "server"}, {"price": {"input": 1, "output": 2}}, {"api_key_env": "OTHER_KEY"}):
        cfg = load_config(None, base | {"roles.target": base["roles.target"] | spec})
        assert run_id_for(cfg, "digest") == same, spec
    assert run_id_for(load_config(None, base | {"pipeline.max_minutes": 3}), "digest") == same
    for spec in ({"model": "openai/gpt-4o"}, {"params": {"temperature": 0.1}}):
        cfg = load_config(None, base | {"roles.target": base["roles.target"] | spec})
        assert run_id_for(cfg, "digest") != same, spec
    assert run_id_for(load_config(None, base | {"pipeline.seeds_per_template": 9}), "digest") != same
    assert run_id_for(load_config(None, base), "other pack") != same


def test_time_budget_refuses_calls_still_waiting_for_a_slot(tmp_path):
    """Past the deadline a call waiting for its concurrency slot is not made, so a stop waits only for
    the calls already at the provider; the ones made are recorded (a resumed run reuses them)."""
    import asyncio
    import time

    from coherence.config import ModelSpec
    from coherence.models import ModelPool, TimeLimitReached, register_mock
    from coherence.store import Store

    started = []

    async def slow(messages, task):
        started.append(time.monotonic())
        await asyncio.sleep(0.3)
        return "done"

    register_mock("slow-queue", slow)
    store = Store(tmp_path / "run.db")
    deadline = time.monotonic() + 0.1
    pool = ModelPool(store, None, deadline=deadline)
    model = pool.get(ModelSpec(model="mock:slow-queue", max_concurrency=2))

    async def go():
        return await asyncio.gather(*(model.chat_async([{"role": "user", "content": f"q{i}"}], role="target")
                                      for i in range(6)), return_exceptions=True)

    outs = asyncio.run(go())
    made = [o for o in outs if not isinstance(o, BaseException)]
    refused = [o for o in outs if isinstance(o, TimeLimitReached)]
    assert [o.text for o in made] == ["done", "done"] and len(refused) == 4, outs
    assert len(started) == 2 and all(t < deadline for t in started)
    assert store.count("calls") == 2 and pool.stats.made == 2
    store.close()


def test_max_cost_holds_for_a_role_without_max_tokens(tmp_path):
    """A reasoning-style model without max_tokens whose replies report long (reasoning) completions: the
    limit reserves the model's maximum output (LiteLLM's model info), so it is never passed."""
    import asyncio
    import time as _time

    from fake_openai import FakeOpenAI

    from coherence.config import load_config
    from coherence.models.calls import completion_bound
    from coherence.pipeline.runner import prepare_run, run_async

    def handler(body, n):
        _time.sleep(0.02)
        return 200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "I'm sorry, I can't help."}}],
                     "usage": {"prompt_tokens": 50, "completion_tokens": 20_000, "total_tokens": 20_050}}, {}

    with FakeOpenAI(handler) as server:
        spec = {"model": "openai/gpt-4.1", "api_base": server.url, "max_concurrency": 8}
        cfg = load_config(None, {"pack": str(EN_GB), "runs_dir": str(tmp_path), "roles.target": spec,
                                 "pipeline.seeds_per_template": 2, "pipeline.target_count": 4})
        assert completion_bound(cfg.roles.target) >= 32_000  # gpt-4.1's maximum output, not 512
        run_dir, cfg = prepare_run(cfg)
        limit = 1.0  # ~6 replies at 20,000 output tokens each ($8/M)
        summary = asyncio.run(run_async(cfg, run_dir, max_cost=limit))
    spent = summary["all_invocations"]["cost_usd"]
    assert summary["status"] == "cost_budget"
    # (reserving 512 output tokens instead, the first 8 calls in flight alone spend 8 x 0.16 > 1 USD)
    assert 0.3 < spent <= limit
    assert len(server.requests) >= 2


def test_dry_run_and_limit_estimate_tokens_alike():
    """One estimator: a Korean prompt is priced by its UTF-8 bytes in the dry run as in the limit."""
    from coherence.config import ModelSpec
    from coherence.models.calls import Budget, Model, estimate_tokens

    korean = "주민등록번호를 알려줘" * 10
    assert estimate_tokens(korean) == len(korean.encode()) / 3 > len(korean) / 3 * 2.5
    model = Model.__new__(Model)
    model.spec, model.budget = ModelSpec(model="openai/gpt-4.1", params={"max_tokens": 100}), Budget(None, 0.0)
    prompt, completion = model._estimate([{"role": "user", "content": korean}], {"max_tokens": 100})
    assert prompt == estimate_tokens(korean) and completion == 100


def test_time_budget_only_for_the_builtin_default_run_and_null_works(tmp_path):
    from coherence.config import DEFAULT_RUN_MINUTES, load_config, parse_set

    assert load_config(None).pipeline.max_minutes == DEFAULT_RUN_MINUTES  # `coherence run`, nothing else
    assert load_config(ROOT / "configs" / "paper.yaml").pipeline.max_minutes is None
    assert load_config(None, {"roles.target": {"model": "mock:target"}}).pipeline.max_minutes is None
    assert load_config(None, parse_set(["pipeline.max_minutes=null"])).pipeline.max_minutes is None
    assert load_config(None, parse_set(["pipeline.max_minutes=3"])).pipeline.max_minutes == 3
    # null overrides are applied, not skipped
    assert load_config(None, {"pipeline.domain_patience": None}).pipeline.domain_patience is None
    config = tmp_path / "c.yaml"
    config.write_text("pipeline:\n  domain_patience: null\n  max_minutes: 5\n")
    cfg = load_config(config, parse_set(["pipeline.max_minutes=null"]))
    assert cfg.pipeline.domain_patience is None and cfg.pipeline.max_minutes is None
