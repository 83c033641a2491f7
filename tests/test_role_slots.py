"""Role slots: candidates and votes keyed by slot (the model kept as data), the 003_role_slots migration
of a run.db written by the earlier schema, and one concurrency/rate bound per provider endpoint."""

import json
import sqlite3

import yaml
from conftest import run_pipeline

from coherence import store as store_module
from coherence.config import ModelSpec
from coherence.models import ModelPool, register_mock
from coherence.store import Store


def _old_db(path):
    """A run.db as the schema before 003_role_slots wrote it (migrations 001 and 002 only)."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied REAL)")
    for name, sql in store_module.MIGRATIONS[:2]:
        db.executescript(sql)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", (name,))
    db.execute("INSERT INTO seeds VALUES ('s1', 0, 'privacy', 'doxxing', 't1', '{}', 'q', 'offline:slots', "
               "'accepted', 'filter', '', 1)")
    db.execute("INSERT INTO attempts VALUES ('s1', 1, 'roleplay', 'p', 'r-', 5, 1)")
    for gen, score, chosen in (("gen/a", 5, 1), ("gen/b", 4, 0)):
        db.execute("INSERT INTO candidates VALUES ('s1', ?, 'text', ?, ?)", (gen, score, chosen))
        db.execute("INSERT INTO verdicts (seed_id, task, subject, judge, score, passed, reason, raw) "
                   "VALUES ('s1', 'response_quality', ?, 'judge/r', ?, NULL, '', '')", (f"candidate:{gen}", score))
    db.execute("INSERT INTO verdicts (seed_id, task, subject, judge, score, passed, reason, raw) "
               "VALUES ('s1', 'query_harm', 'query', 'judge/q', 3, NULL, '', '')")
    db.execute("INSERT INTO verdicts (seed_id, task, subject, judge, score, passed, reason, raw) "
               "VALUES ('s1', 'response_harm', 'attempt:1', 'judge/r', 5, NULL, '', '')")
    for judge in ("judge/x", "judge/y"):
        db.execute("INSERT INTO verdicts (seed_id, task, subject, judge, score, passed, reason, raw) "
                   "VALUES ('s1', 'filter', 'triplet', ?, NULL, 1, 'ok', '')", (judge,))
    provenance = {"generator": "gen/a", "attacker": "offline:attacker", "target": "local:smollm2",
                  "offline_roles": [],
                  "scores": {"query_harm": {"judge/q": 3}, "rejected_harm": {"judge/r": 5},
                             "chosen_quality": {"gen/a": 5}, "filter": {"judge/x": True, "judge/y": True}}}
    db.execute("INSERT INTO triplets VALUES ('s1', 'privacy', 'accepted', '', 'p', 'c', 'r', ?)",
               (json.dumps(provenance),))
    db.execute("INSERT INTO calls VALUES ('k', 'gen/a', 'generator', '{}', '{\"text\": \"t\"}', 1, 1, 0, 0, 0)")
    db.commit()
    db.close()


def test_migration_converts_a_pre_slot_run_db(tmp_path):
    run = tmp_path / "runs" / "old"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"roles": {
        "generators": [{"model": "gen/a"}, {"model": "gen/b"}],
        "filter_judges": [{"model": "judge/x"}, {"model": "judge/y"}]}}))
    _old_db(run / "run.db")
    store = Store(run / "run.db")
    assert "003_role_slots" in {r[0] for r in store.db.execute("SELECT name FROM _migrations")}
    cands = store.candidates("s1")
    assert [(c["slot"], c["model"], c["chosen"]) for c in cands] == [("generators[0]", "gen/a", 1),
                                                                    ("generators[1]", "gen/b", 0)]
    assert store.chosen_slot_counts() == {"generators[0]": 1}
    votes = {(v["task"], v["subject"], v["slot"]): v["judge"] for v in store.verdicts("s1")}
    assert votes == {
        ("response_quality", "candidate:generators[0]", "response_judge"): "judge/r",
        ("response_quality", "candidate:generators[1]", "response_judge"): "judge/r",
        ("query_harm", "query", "query_judge"): "judge/q",
        ("response_harm", "attempt:1", "response_judge"): "judge/r",
        ("filter", "triplet", "filter_judges[0]"): "judge/x",
        ("filter", "triplet", "filter_judges[1]"): "judge/y",
    }
    p = next(store.triplets())["provenance"]
    assert p["generator"] == "generators[0]" and p["generator_model"] == "gen/a"
    assert p["scores"] == {"query_harm": {"query_judge": 3}, "rejected_harm": {"response_judge": 5},
                           "chosen_quality": {"generators[0]": 5},
                           "filter": {"filter_judges[0]": True, "filter_judges[1]": True}}
    assert store.cached_call("k")["refusal"] is None
    store.close()
    Store(run / "run.db").close()  # opening again migrates nothing twice


def test_two_slots_on_one_model_keep_their_own_candidates(tmp_path):
    """Two generators on one model with different params: two candidates, two choices counted apart."""
    def gen(messages, task):
        return "I can't help with that. Under the Data Protection Act 2018 contact the ICO."
    register_mock("twin", gen)
    generators = [{"model": "mock:twin", "params": {"temperature": 0.1}},
                  {"model": "mock:twin", "params": {"temperature": 0.9}}]
    summary, run_dir = run_pipeline(tmp_path, {"roles.generators": generators})
    store = Store(run_dir / "run.db")
    seed = next(s for s in store.seeds() if store.candidates(s["id"]))
    assert [(c["slot"], c["model"]) for c in store.candidates(seed["id"])] == [
        ("generators[0]", "mock:twin"), ("generators[1]", "mock:twin")]
    assert len(store.verdicts(seed["id"], "response_quality")) == 2
    counts = store.chosen_slot_counts()
    assert set(counts) == {"generators[0]", "generators[1]"}  # equal scores: the tie-break alternates slots
    assert abs(counts["generators[0]"] - counts["generators[1]"]) <= 1
    t = next(store.triplets())
    assert t["provenance"]["models"]["generators[1]"] == "mock:twin"
    assert t["provenance"]["generator"] in ("generators[0]", "generators[1]")


def test_one_bound_per_endpoint_and_limit_group_overrides(tmp_path):
    store = Store(tmp_path / "x.db")
    a = ModelSpec(model="openai/gpt-4.1", api_base="http://h/v1", max_concurrency=4, params={"temperature": 0})
    b = ModelSpec(model="openai/gpt-4.1", api_base="http://h/v1", params={"temperature": 1})  # default 8
    c = ModelSpec(model="openai/gpt-4.1", api_base="http://other/v1")
    d = ModelSpec(model="openai/gpt-4.1-mini", api_base="http://h/v1", limit_group="acct", max_concurrency=2)
    e = ModelSpec(model="openai/o3", api_base="http://h/v1", limit_group="acct")
    pool = ModelPool(store, None, specs=[a, b, c, d, e])
    assert pool.get(a) is not pool.get(b)  # own params, own cache identity
    assert pool.limits(a) is pool.limits(b)  # one bound for the endpoint ...
    assert pool.limits(a).max_concurrency == 4  # ... the tightest one a role sets
    assert pool.limits(c) is not pool.limits(a)  # another api_base is another endpoint
    assert pool.limits(d) is pool.limits(e) and pool.limits(e).max_concurrency == 2
