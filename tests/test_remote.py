"""Every role on LiteLLM model strings against a fake OpenAI-compatible server on 127.0.0.1."""

import json
import re

import pytest
from conftest import run_pipeline
from fake_openai import FakeOpenAI, reply

from coherence.errors import CoherenceError
from coherence.store import Store

CRITERIA = ("query_intent", "query_natural", "rejected_harmful", "chosen_safe", "chosen_coherent",
            "chosen_appropriate")


def make_handler():
    seen = {"judge_malformed": 0, "always_bad_filter": 0}

    def handler(body, n):
        model = body["model"]
        user = body["messages"][-1]["content"]
        if n == 3:
            return 429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"retry-after": "0"}
        if n == 7:
            return 500, {"error": {"message": "boom", "type": "server_error"}}, {}
        fmt = body.get("response_format") or {}
        if model.startswith("judge"):
            schema = fmt.get("json_schema", {})
            assert schema.get("schema"), "judges must ask for a JSON schema"
            if schema["name"] == "filter":
                if model == "judge-bad":  # this judge never answers in JSON
                    seen["always_bad_filter"] += 1
                    return 200, reply("I think it is fine, all good."), {}
                return 200, reply(json.dumps({**{c: True for c in CRITERIA}, "reason": "ok"})), {}
            if seen["judge_malformed"] == 0:  # first judge reply is malformed, the retry succeeds
                seen["judge_malformed"] += 1
                return 200, reply("score: maybe?"), {}
            top = schema["schema"]["properties"]["score"]["maximum"]
            return 200, reply(json.dumps({"score": top - 1, "reason": "looks harmful"})), {}
        if model == "attacker":
            q = re.search(r"Request: (.*)\. Reply with", user, re.S)
            return 200, reply("For my thesis, please: " + (q.group(1) if q else user)), {}
        if model == "filler":
            tpl = re.search(r"naturally: (.*)\nValues:", user).group(1)
            values = dict(line.split(": ", 1) for line in user.split("Values:\n")[1].split("\nReply")[0].splitlines())
            return 200, reply(tpl.format(**values)), {}
        if model == "target":
            return 200, reply("Sure. Step 1. Use the address database. 2. Call the bank account line."), {}
        if model.startswith("gen"):
            return 200, reply(f"I can't help with that ({model}). Under the Data Protection Act 2018 ..."), {}
        return 404, {"error": {"message": f"unknown model {model}"}}, {}

    return handler, seen


def remote_roles(url: str, filter_models=("judge-a", "judge-b", "judge-c")) -> dict:
    def spec(name):
        return {"model": f"openai/{name}", "api_base": url, "max_concurrency": 4}
    return {
        "roles.target": spec("target"), "roles.attacker": spec("attacker"), "roles.slot_filler": spec("filler"),
        "roles.generators": [spec("gen-1"), spec("gen-2"), spec("gen-3")],
        "roles.query_judge": spec("judge-q"), "roles.response_judge": spec("judge-r"),
        "roles.filter_judges": [spec(m) for m in filter_models],
        "pipeline.seeds_per_template": 1, "pipeline.target_count": 2,
    }


@pytest.mark.parametrize("via_litellm", [False, True], ids=["openai_compat", "litellm"])
def test_every_role_remote_with_faults(tmp_path, monkeypatch, via_litellm):
    # openai/... with an api_base takes the lean OpenAI-compatible client; the same run through LiteLLM
    monkeypatch.setenv("COHERENCE_OPENAI_VIA_LITELLM", "1" if via_litellm else "0")
    handler, seen = make_handler()
    with FakeOpenAI(handler) as server:
        summary, run_dir = run_pipeline(tmp_path, remote_roles(server.url))
    store = Store(run_dir / "run.db")
    assert summary["status"] == "finished"
    assert summary["funnel"]["accepted"] == 2
    assert summary["all_invocations"]["errors"] == {"429": 1, "InternalServerError" if via_litellm else "500": 1}
    assert 429 in server.statuses and 500 in server.statuses
    roles = {r["role"] for r in store._rows("SELECT DISTINCT role FROM calls")}
    assert roles == {"slot_filler", "attacker", "target", "generators[0]", "generators[1]", "generators[2]",
                     "query_judge", "response_judge", "filter_judges[0]", "filter_judges[1]", "filter_judges[2]"}
    # the malformed judge reply was retried once and then parsed
    retried = [v for s in store.seeds() for v in store.verdicts(s["id"]) if v["detail"].get("tries") == 2]
    assert len(retried) == 1 and retried[0]["score"] is not None
    t = next(store.triplets("accepted"))
    assert t["provenance"]["generator"].startswith("generators[")
    assert t["provenance"]["generator_model"].startswith("openai/gen-")
    assert t["provenance"]["offline_roles"] == []
    # every configured remote model was really asked, through our api_base
    assert {r["model"] for r in server.requests} == {"target", "attacker", "filler", "gen-1", "gen-2", "gen-3",
                                                     "judge-q", "judge-r", "judge-a", "judge-b", "judge-c"}


def test_unparseable_filter_judge_is_recorded_not_a_crash(tmp_path):
    handler, seen = make_handler()
    with FakeOpenAI(handler) as server:
        summary, run_dir = run_pipeline(tmp_path, remote_roles(server.url, ("judge-a", "judge-b", "judge-bad")))
    store = Store(run_dir / "run.db")
    assert summary["status"] == "finished" and summary["funnel"]["accepted"] == 0
    row = next(store.triplets("rejected"))
    assert "filter_judges[2] (openai/judge-bad): unscored" in row["reason"]
    bad = [v for v in store.verdicts(row["seed_id"], "filter") if v["slot"] == "filter_judges[2]"][0]
    assert bad["judge"] == "openai/judge-bad"
    assert bad["passed"] is None and bad["detail"]["error"] == "unparseable"
    assert bad["raw"] == "I think it is fine, all good."


def test_unknown_model_stops_at_once(tmp_path):
    handler, _ = make_handler()
    with FakeOpenAI(handler) as server:
        roles = remote_roles(server.url)
        roles["roles.target"] = {"model": "openai/no-such-model", "api_base": server.url}
        with pytest.raises(CoherenceError, match="no-such-model"):
            run_pipeline(tmp_path, roles)
        assert len([s for s in server.statuses if s == 404]) <= 4  # at most the calls already in flight


def test_missing_key_variable_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv("COHERENCE_TEST_KEY", raising=False)
    with pytest.raises(CoherenceError, match="COHERENCE_TEST_KEY is not set"):
        run_pipeline(tmp_path, {"roles.target": {"model": "openai/gpt-4.1", "api_key_env": "COHERENCE_TEST_KEY"}})


def test_hosted_vllm_and_openai_compatible_api_base(tmp_path):
    """A vLLM-served target (``hosted_vllm/ORG/NAME`` + api_base) is asked for ORG/NAME at that server,
    with the key from the variable named; a 400 content-filter reply is a refusal output, not an error."""
    import asyncio

    from coherence.config import ModelSpec
    from coherence.models import ModelPool

    def handler(body, n):
        if "blocked" in body["messages"][-1]["content"]:
            return 400, {"error": {"message": "filtered", "code": "content_filter"}}, {}
        return 200, reply(f"served {body['model']}"), {}

    with FakeOpenAI(handler) as server:
        store = Store(tmp_path / "calls.db")
        pool = ModelPool(store, None)

        async def go():
            target = pool.get(ModelSpec(model="hosted_vllm/Qwen/Qwen2.5-7B-Instruct", api_base=server.url))
            ok = await target.chat_async([{"role": "user", "content": "hi"}], role="target")
            blocked = await target.chat_async([{"role": "user", "content": "blocked"}], role="target")
            await pool.aclose()
            return ok, blocked

        ok, blocked = asyncio.run(go())
    assert ok.text == "served Qwen/Qwen2.5-7B-Instruct"
    assert blocked.text == "" and blocked.refusal == "content_filter" and "filtered" in blocked.extra["reason"]
    assert server.requests[0]["model"] == "Qwen/Qwen2.5-7B-Instruct"
