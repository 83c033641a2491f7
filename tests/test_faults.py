"""A flaky server (500s, 429s, timeouts, truncated bodies) and a run SIGKILLed three times: the resumed
run equals an uninterrupted one row for row, and few calls are repeated (benchmarks/faults.py at size)."""

import sys

from conftest import EN_GB, ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))


def test_flaky_server_three_sigkills_resume_to_the_same_dataset(tmp_path):
    from faults import fault_run

    concurrency = 8  # one bound for the whole run (a limit_group), so at most 8 answers are in flight
    r = fault_run(pack=str(EN_GB), seeds_per_template=3, max_seeds=None, concurrency=concurrency, latency=0.0,
                  timeout=0.5, kills=3, seed=1, target_count=100, retry_after_500=0, workdir=tmp_path)
    assert r["equal"], r["mismatched"]
    assert r["same_triplets_jsonl"]
    assert r["accepted"] > 0
    for code in ("500", "429", "299", "598"):  # 299: a truncated body sent as 200; 598: left hanging
        assert r["victim_statuses"].get(code, 0) > 0, r["victim_statuses"]
    # only answers in flight at a kill are lost: at most one concurrency's worth per kill
    assert 0 <= r["repeated"] <= 3 * concurrency, r
