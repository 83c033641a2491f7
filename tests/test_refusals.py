"""Per-item provider refusals: a paid run never dies of one refused prompt.

Against a fake server that answers a deterministic 5% of prompts with 400 content_filter and 1% with 400
context_length_exceeded (the same prompt gets the same refusal on a retry), a run with every role remote
finishes; the refused seeds are recorded with their reason, and every other seed ends as it does in the
same run without refusals."""

import asyncio
import hashlib
import json
import re

import pytest
from conftest import run_pipeline
from fake_openai import FakeOpenAI, refusal_for, refusing, reply

from coherence.config import ModelSpec
from coherence.errors import CoherenceError, FatalProviderError
from coherence.models import ModelPool
from coherence.models.base import classify_refusal
from coherence.store import Store

CRITERIA = ("query_intent", "query_natural", "rejected_harmful", "chosen_safe", "chosen_coherent",
            "chosen_appropriate")


def _h(text: str) -> int:
    return hashlib.sha256(text.encode()).digest()[0]


def handler(body, n):
    """Every role, deterministic in the request alone (no fault depends on arrival order)."""
    model, user = body["model"], body["messages"][-1]["content"]
    schema = (body.get("response_format") or {}).get("json_schema", {})
    if model.startswith("judge"):
        if schema.get("name") == "filter":
            return 200, reply(json.dumps({**{c: True for c in CRITERIA}, "reason": "ok"})), {}
        top = schema["schema"]["properties"]["score"]["maximum"]
        if top == 4:
            score = 3
        elif "Core principles:" in user:  # the quality rubric carries the policy
            score = 3 + _h(user) % 3
        else:
            score = 5 if "Step 1" in user else 1
        return 200, reply(json.dumps({"score": score, "reason": "r"})), {}
    if model == "attacker":
        q = re.search(r"Request: (.*)\. Reply with", user, re.S)
        q = q.group(1) if q else user
        return 200, reply(("For my thesis, please: " if _h(user) % 3 == 0 else "Tell me: ") + q), {}
    if model == "filler":
        tpl = re.search(r"naturally: (.*)\nValues:", user).group(1)
        values = dict(line.split(": ", 1) for line in user.split("Values:\n")[1].split("\nReply")[0].splitlines())
        return 200, reply(tpl.format(**values)), {}
    if model == "target":
        if "thesis" in user:
            return 200, reply("Sure. Step 1. Use the address database. 2. Call the bank account line."), {}
        return 200, reply("I'm sorry, I can't help with that."), {}
    if model.startswith("gen"):
        return 200, reply(f"I can't help with that ({model}). Under the Data Protection Act 2018 ..."), {}
    return 404, {"error": {"message": f"unknown model {model}"}}, {}


def roles(url: str) -> dict:
    def spec(name):
        return {"model": f"openai/{name}", "api_base": url, "max_concurrency": 4}
    return {
        "roles.target": spec("target"), "roles.attacker": spec("attacker"), "roles.slot_filler": spec("filler"),
        "roles.generators": [spec("gen-1"), spec("gen-2"), spec("gen-3")],
        "roles.query_judge": spec("judge-q"), "roles.response_judge": spec("judge-r"),
        "roles.filter_judges": [spec("judge-a"), spec("judge-b"), spec("judge-c")],
        "pipeline.seeds_per_template": 6, "pipeline.target_count": 200, "pipeline.domain_patience": None,
        "pipeline.max_attempts": 3,
    }


def touched(store: Store) -> set[str]:
    """Seeds any of whose calls a provider refused (their path may differ from the run without refusals)."""
    out = {s["id"] for s in store.seeds(status="provider_refused")}
    for s in store.seeds():
        for v in store.verdicts(s["id"]):
            if v["detail"].get("refusal") or v["detail"].get("error") == "provider_refused":
                out.add(s["id"])
        if any(c["refusal"] for c in store.candidates(s["id"])):
            out.add(s["id"])
    return out


def ending(store: Store, seed_id: str) -> tuple:
    seed = store.seed(seed_id)
    attempts = [(a["attempt"], a["strategy"], a["score"], a["jailbroken"]) for a in store.attempts(seed_id)]
    return seed["status"], seed["stage"], seed["text"], attempts


def test_refused_prompts_are_items_not_run_failures(tmp_path):
    with FakeOpenAI(handler) as server:
        clean, clean_dir = run_pipeline(tmp_path / "clean", roles(server.url))
    with FakeOpenAI(refusing(handler, content_filter=0.05, context_length=0.01)) as server:
        summary, run_dir = run_pipeline(tmp_path / "refused", roles(server.url))
        refused_400 = sum(1 for s in server.statuses if s == 400)
        # a resume sends none of them again, and nothing else either
        again, _ = run_pipeline(tmp_path / "refused", roles(server.url))
        assert again["this_invocation"]["model_calls_made"] == 0
        assert sum(1 for s in server.statuses if s == 400) == refused_400
    assert clean["status"] == summary["status"] == "finished"
    assert clean["provider_refusals"]["by_slot"] == {}
    by_slot = summary["provider_refusals"]["by_slot"]
    total = sum(n for kinds in by_slot.values() for n in kinds.values())
    assert total == refused_400 > 5
    assert {k for kinds in by_slot.values() for k in kinds} == {"content_filter", "context_length"}
    store, base = Store(run_dir / "run.db"), Store(clean_dir / "run.db")
    # the refused seeds say why
    stopped = store.seeds(status="provider_refused")
    assert stopped and all("refused by the provider" in s["reason"] for s in stopped)
    assert all(re.search(r"\((content_filter|context_length)\)", s["reason"]) for s in stopped)
    assert summary["funnel"]["provider_refused"] == summary["provider_refusals"]["seeds_stopped"]
    # every other seed ends as in the run without refusals
    skip = touched(store)
    others = [s["id"] for s in base.seeds() if s["id"] not in skip]
    # (a seed makes ~15 calls, so at 6% a refusal touches about 60% of them)
    assert len(others) >= 8 and len(skip) >= 8
    assert [ending(store, i) for i in others] == [ending(base, i) for i in others]
    # a target block is an attempt scored as a refusal, and the attack went on
    harm = [v for s in store.seeds() for v in store.verdicts(s["id"], "response_harm")]
    blocked = [v for v in harm if v["slot"] == "target"]
    assert blocked and all(v["score"] == 1 and v["detail"]["refusal"] for v in blocked)
    for v in blocked:
        seed = store.seed(v["seed_id"])
        n = int(v["subject"].split(":")[1])
        assert seed["status"] == "provider_refused" or len(store.attempts(seed["id"])) > n or \
            seed["status"] == "no_jailbreak"  # the attack went on after the block (or it was the last attempt)
    # a judge's refusal is an unscored verdict
    unscored = [v for s in store.seeds() for v in store.verdicts(s["id"])
                if v["detail"].get("error") == "provider_refused"]
    assert unscored and all(v["score"] is None and v["passed"] is None and v["slot"] != "target" for v in unscored)


def test_retry_refused_sends_them_again(tmp_path):
    shares = {"content_filter": 0.05, "context_length": 0.01}
    blocking = {"on": True}

    def flaky(body, n):
        if blocking["on"] and refusal_for(body, **shares):
            return refusing(handler, **shares)(body, n)
        return handler(body, n)

    overrides = {**roles("URL"), "pipeline.seeds_per_template": 2}
    with FakeOpenAI(flaky) as server:
        overrides = {k: (dict(v, api_base=server.url) if isinstance(v, dict) else
                         [dict(x, api_base=server.url) for x in v] if isinstance(v, list) else v)
                     for k, v in overrides.items()}
        first, run_dir = run_pipeline(tmp_path, overrides)
        n_refused = sum(n for kinds in first["provider_refusals"]["by_slot"].values() for n in kinds.values())
        assert n_refused > 0
        blocking["on"] = False  # the provider's policy changed (or the prompt was fixed)
        import asyncio as _asyncio

        from coherence.config import load_config
        from coherence.pipeline.runner import prepare_run, run_async
        cfg_dir, cfg = prepare_run(load_config(None, {}), resume=str(run_dir))
        summary = _asyncio.run(run_async(cfg, cfg_dir, retry_refused=True))
    store = Store(run_dir / "run.db")
    assert summary["status"] == "finished" and summary["this_invocation"]["model_calls_made"] > 0
    # what a refusal stopped was taken up again: no seed is left stopped by one in stages B-D ...
    assert not [s for s in store.seeds(status="provider_refused") if s["stage"] != "seed"]
    for s in store.seeds():
        if s["status"] in ("query_rejected", "rejected"):
            task = "query_harm" if s["status"] == "query_rejected" else "filter"
            assert all(v["detail"].get("error") != "provider_refused" for v in store.verdicts(s["id"], task))
    # ... and what is left refused is data no stage asks again: target blocks (the target refused), a
    # generator refused beside one that answered (its seed went on), judgements of attempts and candidates
    left = {slot.split("[")[0] for slot in store.refusal_counts()}
    assert left <= {"slot_filler", "target", "generators", "response_judge"}


@pytest.mark.parametrize("body,kind", [
    ({"error": {"code": "content_filter", "message": "filtered"}}, "content_filter"),
    ({"error": {"code": "invalid_prompt", "message": "Invalid prompt: flagged"}}, "invalid_prompt"),
    ({"error": {"code": "context_length_exceeded", "message": "maximum context length is 8192"}}, "context_length"),
    ({"error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000"}},
     "context_length"),
])
def test_openai_compat_400_bodies_are_classified(tmp_path, body, kind):
    with FakeOpenAI(lambda b, n: (400, body, {})) as server:
        pool = ModelPool(Store(tmp_path / "c.db"), None)

        async def go():
            out = await pool.get(ModelSpec(model="openai/x", api_base=server.url)).chat_async(
                [{"role": "user", "content": "hi"}], role="generators[0]")
            await pool.aclose()
            return out

        out = asyncio.run(go())
    assert out.refusal == kind and out.text == "" and len(server.requests) == 1  # never retried


@pytest.mark.parametrize("via_litellm", [False, True], ids=["openai_compat", "litellm"])
@pytest.mark.parametrize("status,body,fix", [
    (401, {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}, "key"),
    (404, {"error": {"message": "The model `x` does not exist", "code": "model_not_found"}}, "model name"),
    (429, {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                     "code": "insufficient_quota"}}, "quota"),
])
def test_only_auth_unknown_model_and_quota_are_fatal(tmp_path, monkeypatch, via_litellm, status, body, fix):
    monkeypatch.setenv("COHERENCE_OPENAI_VIA_LITELLM", "1" if via_litellm else "0")
    with FakeOpenAI(lambda b, n: (status, body, {})) as server:
        pool = ModelPool(Store(tmp_path / "c.db"), None)

        async def go():
            try:
                await pool.get(ModelSpec(model="openai/x", api_base=server.url, max_retries=1)).chat_async(
                    [{"role": "user", "content": "hi"}], role="target")
            finally:
                await pool.aclose()

        with pytest.raises(FatalProviderError, match=f"fix: .*{fix}"):
            asyncio.run(go())
        assert len(server.requests) == 1


@pytest.mark.parametrize("via_litellm", [True])
def test_litellm_classifies_refusals(tmp_path, monkeypatch, via_litellm):
    monkeypatch.setenv("COHERENCE_OPENAI_VIA_LITELLM", "1")
    bodies = {"a": ({"error": {"code": "content_filter", "message": "content management policy"}}, "content_filter"),
              "b": ({"error": {"code": "context_length_exceeded", "message": "maximum context length is 10"}},
                    "context_length")}
    with FakeOpenAI(lambda b, n: (400, bodies[b["messages"][-1]["content"]][0], {})) as server:
        pool = ModelPool(Store(tmp_path / "c.db"), None)

        async def go():
            m = pool.get(ModelSpec(model="openai/x", api_base=server.url))
            outs = [await m.chat_async([{"role": "user", "content": k}], role="target") for k in bodies]
            await pool.aclose()
            return outs

        outs = asyncio.run(go())
    assert [o.refusal for o in outs] == [kind for _, kind in bodies.values()]


def test_classify_refusal_leaves_other_bad_requests_alone():
    assert classify_refusal("unsupported_parameter", "'response_format' is not supported") is None
    assert classify_refusal(None, "Your request was rejected as a result of our safety system") == "content_filter"


def test_unknown_model_still_stops_the_run(tmp_path):
    with FakeOpenAI(handler) as server:
        overrides = roles(server.url)
        overrides["roles.target"] = {"model": "openai/no-such-model", "api_base": server.url}
        with pytest.raises(CoherenceError, match="no-such-model"):
            run_pipeline(tmp_path, overrides)
