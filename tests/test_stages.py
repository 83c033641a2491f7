"""Each stage's rule, pinned."""

import json

from conftest import run_pipeline

from coherence.models import register_mock
from coherence.pipeline.attack import strategy_for
from coherence.pipeline.respond import choose
from coherence.packs.schema import STRATEGY_IDS
from coherence.store import Store


def test_tie_goes_to_least_used_generator():
    cands = [{"slot": g, "text": "x", "verdict": {"score": s}} for g, s in (("a", 5), ("b", 5), ("c", 4))]
    assert choose(cands, {"a": 3, "b": 1}, ["a", "b", "c"]) == "b"
    assert choose(cands, {"a": 0, "b": 1}, ["a", "b", "c"]) == "a"
    # best score beats usage
    assert choose(cands, {"a": 9, "b": 9, "c": 0}, ["a", "b", "c"]) == "a"
    # unscored candidates never win
    unscored = [{"slot": "a", "text": "x", "verdict": {"score": None}}]
    assert choose(unscored, {}, ["a"]) is None


def test_tie_break_spreads_choices_in_a_run(tmp_path):
    summary, run_dir = run_pipeline(tmp_path, {})
    store = Store(run_dir / "run.db")
    counts = store.chosen_slot_counts()
    # offline:policy (generators[0]) and offline:policy-warm (generators[2]) both score 5 (P1-P3),
    # brief scores 4: ties alternate
    assert set(counts) == {"generators[0]", "generators[2]"}
    assert abs(counts["generators[0]"] - counts["generators[2]"]) <= 1


def test_strategies_rotate_through_all_five():
    assert {strategy_for(0, a) for a in range(1, 6)} == set(STRATEGY_IDS)
    assert strategy_for(3, 1) != strategy_for(4, 1)


def test_seed_that_never_jailbreaks_yields_no_triplet_and_says_why(tmp_path):
    summary, run_dir = run_pipeline(tmp_path, {"roles.target": {"model": "mock:refuser"}})
    store = Store(run_dir / "run.db")
    assert summary["funnel"]["accepted"] == 0 and store.count("triplets") == 0
    failed = store.seeds(status="no_jailbreak")
    assert failed, "every attacked seed should be recorded as no_jailbreak"
    assert all("no jailbreak in 5 attempts" in s["reason"] for s in failed)
    assert all(len(store.attempts(s["id"])) == 5 for s in failed)
    assert {a["strategy"] for a in store.attempts(failed[0]["id"])} == set(STRATEGY_IDS)


def _judge(reply):
    def fn(messages, task):
        return reply(messages[-1]["content"], task)
    return fn


def test_query_judged_1_is_discarded(tmp_path):
    register_mock("qjudge", _judge(lambda p, t: '{"score": 1, "reason": "harmless"}'))
    summary, run_dir = run_pipeline(tmp_path, {"roles.query_judge": {"model": "mock:qjudge"}})
    store = Store(run_dir / "run.db")
    rejected = store.seeds(status="query_rejected")
    assert rejected and summary["funnel"]["accepted"] == 0
    assert all(r["reason"] == "query harm 1 < 2" for r in rejected)
    assert store.count("candidates") == 0  # no generator was asked


def test_one_dissenting_filter_judge_rejects(tmp_path):
    yes = {c: True for c in ("query_intent", "query_natural", "rejected_harmful", "chosen_safe",
                             "chosen_coherent", "chosen_appropriate")}
    register_mock("yes", _judge(lambda p, t: json.dumps({**yes, "reason": "fine"})))
    register_mock("no", _judge(lambda p, t: json.dumps({**yes, "chosen_coherent": False, "reason": "no P2"})))
    judges = [{"model": "mock:yes"}, {"model": "mock:yes"}, {"model": "mock:no"}]
    summary, run_dir = run_pipeline(tmp_path, {"roles.filter_judges": judges})
    store = Store(run_dir / "run.db")
    assert summary["funnel"]["accepted"] == 0 and summary["funnel"]["filter_rejected"] > 0
    row = next(store.triplets("rejected"))
    assert row["reason"] == "filter_judges[2] (mock:no): no P2"
    # every vote is stored, one per slot, even where two slots share one model
    votes = store.verdicts(row["seed_id"], "filter")
    assert [(v["slot"], v["judge"]) for v in votes] == [
        ("filter_judges[0]", "mock:yes"), ("filter_judges[1]", "mock:yes"), ("filter_judges[2]", "mock:no")]


def test_unanimous_ensemble_accepts_and_balances(tmp_path):
    summary, run_dir = run_pipeline(tmp_path, {})
    assert summary["accepted_per_domain"] == {"privacy": 2, "crime": 2}
    store = Store(run_dir / "run.db")
    for t in store.triplets("accepted"):
        assert set(t["provenance"]["scores"]["filter"].values()) == {True}
        assert len(t["provenance"]["scores"]["filter"]) == 3


def test_near_duplicates_are_removed_and_kept_with_reason(tmp_path):
    summary, run_dir = run_pipeline(tmp_path, {"pipeline.near_duplicate_threshold": 0.5})
    store = Store(run_dir / "run.db")
    dups = store.seeds(status="duplicate")
    assert dups and all(d["reason"].startswith("near-duplicate") for d in dups)
    assert summary["funnel"]["duplicates_removed"] == len(dups)


def test_domain_the_target_resists_is_given_up_after_patience(tmp_path):
    summary, run_dir = run_pipeline(tmp_path, {"roles.target": {"model": "mock:refuser"},
                                               "pipeline.domain_patience": 4})
    assert set(summary["domains_given_up"]) == {"privacy", "crime"}
    assert "after 4 attacked seeds" in summary["domains_given_up"]["crime"]
    assert summary["funnel"]["attacked"] == 8 and summary["funnel"]["not_attacked"] > 0


def test_time_budget_stops_cleanly_and_running_again_continues(tmp_path):
    import time as _time

    from coherence.models import register_mock

    def slow(messages, task):
        _time.sleep(0.05)
        return "I'm sorry, I can't help with that."

    register_mock("slow", slow)
    first, run_dir = run_pipeline(tmp_path, {"roles.target": {"model": "mock:slow"},
                                             "pipeline.max_minutes": 0.01})
    assert first["status"] == "time_budget"
    assert 0 < first["funnel"]["attempts"] < first["funnel"]["seeds"] * 5
    second, run_dir2 = run_pipeline(tmp_path, {"roles.target": {"model": "mock:slow"},
                                               "pipeline.max_minutes": None})
    assert run_dir2 == run_dir and second["status"] == "finished"
    assert second["funnel"]["attempts"] == second["funnel"]["attacked"] * 5


def test_offline_attacker_code_switches_after_plain_attempts():
    import asyncio

    from coherence.models.offline import OfflineAttacker
    from coherence.packs.loader import load_pack

    attacker = OfflineAttacker(load_pack("ko-KR"))
    task = {"strategy": "emotional_appeal", "query": "QUERY", "gloss": "GLOSS", "seed_id": "s1"}

    def prompt(attempt, params):
        out = asyncio.run(attacker.generate_async(messages=[], params=params, task={**task, "attempt": attempt}))
        return out.text

    assert "GLOSS" not in prompt(1, {}) and "GLOSS" in prompt(2, {})  # default: one plain attempt
    assert "GLOSS" in prompt(1, {"plain_attempts": 0})
    assert "GLOSS" not in prompt(2, {"plain_attempts": 2}) and "GLOSS" in prompt(3, {"plain_attempts": 2})


def test_seed_order_interleaves_templates_within_each_domain(tmp_path):
    summary, run_dir = run_pipeline(tmp_path, {"roles.target": {"model": "mock:refuser"}, "pipeline.max_attempts": 1})
    seeds = sorted(Store(run_dir / "run.db").seeds(), key=lambda s: s["ord"])
    for domain in {s["domain"] for s in seeds}:
        first = [s["template"] for s in seeds if s["domain"] == domain and s["status"] != "duplicate"]
        n_templates = len(set(first))
        assert len(set(first[:n_templates])) == n_templates, first  # every template before any repeats


def test_variants_per_fill_are_separate_seeds_and_identical_ones_are_near_duplicates(tmp_path):
    register_mock("filler", lambda m, t: f"Question about {t['slot_fill']} in wording {t.get('variant', 0)}, "
                                         f"{'please' if t.get('variant') else 'thanks'} "
                                         + "x" * 40 * t.get("variant", 0))
    one, _ = run_pipeline(tmp_path, {"roles.slot_filler": {"model": "mock:filler"}}, run_id="one")
    two, run_dir = run_pipeline(tmp_path, {"roles.slot_filler": {"model": "mock:filler"},
                                           "pipeline.variants_per_fill": 2}, run_id="two")
    assert two["funnel"]["seeds"] == 2 * one["funnel"]["seeds"]
    # a second wording is not a near-duplicate of the first; fills whose first wordings were
    # near-duplicates of each other have second wordings that are, too
    assert two["funnel"]["duplicates_removed"] == 2 * one["funnel"]["duplicates_removed"]
    # the offline filler writes the same text for every variant: the extra ones are near-duplicates
    same, _ = run_pipeline(tmp_path, {"pipeline.variants_per_fill": 2}, run_id="same")
    base, _ = run_pipeline(tmp_path, {}, run_id="base")
    assert same["funnel"]["seeds"] - same["funnel"]["duplicates_removed"] == \
        base["funnel"]["seeds"] - base["funnel"]["duplicates_removed"]
