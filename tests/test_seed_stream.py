"""Stage A streams beside the other stages: attacks start on the first seeds while later ones are
being filled, seeds no wave needs are never filled, and where stage A ends does not depend on timing
(a run stopped while stage A is filling resumes to the same seeds as an uninterrupted one)."""

import asyncio

import pytest
from conftest import EN_GB, run_pipeline
from test_waves import Crash, _rows

from coherence.config import load_config
from coherence.models import register_mock
from coherence.packs.loader import load_pack
from coherence.pipeline import runner, seed
from coherence.store import Store

# every distinct fill of the en-GB pack (72), a small quota, a small window: stage A could fill far
# more than the waves need
OVERRIDES = {"pipeline.seeds_per_template": 50, "pipeline.target_count": 4, "pipeline.domain_patience": None,
             "roles.slot_filler": {"model": "mock:slow-filler", "max_concurrency": 2}}
PLANNED = len(seed.plan_seeds(load_pack(EN_GB), load_config(None, {"pack": str(EN_GB), **OVERRIDES}).pipeline))


async def slow_filler(messages, task):
    await asyncio.sleep(0.005)
    return task["template"].format_map(task["slot_fill"])


@pytest.fixture(autouse=True)
def small_window(monkeypatch):
    register_mock("slow-filler", slow_filler)
    monkeypatch.setattr(seed, "WINDOW_EXTRA", 0)
    monkeypatch.setattr(seed, "COMMIT_BATCH", 2)
    monkeypatch.setattr(runner, "MAX_WAVE_PER_DOMAIN", 2)


def test_attacks_start_before_stage_a_is_done_and_unneeded_seeds_are_not_filled(tmp_path, monkeypatch):
    written_at_wave = []
    original = runner.Waves._append

    def spy(self, number):
        written_at_wave.append(self.ctx.store.count("seeds"))
        original(self, number)

    monkeypatch.setattr(runner.Waves, "_append", spy)
    summary, run_dir = run_pipeline(tmp_path, OVERRIDES, run_id="lazy")
    assert summary["status"] == "finished" and summary["funnel"]["accepted"] == 4
    assert PLANNED == 72
    assert written_at_wave[0] < 40, written_at_wave  # the first wave did not wait for stage A
    seeded = summary["funnel"]["seeds"]
    assert seeded < PLANNED, seeded  # the quotas were met before every fill was needed
    store = Store(run_dir / "run.db")
    assert not store.get_meta("stage_a_done")
    # what was written is the first `seeded` seeds of the plan, in order
    assert [s["ord"] for s in store.seeds()] == list(range(seeded))
    # the same run again: the same seeds (timing does not decide where stage A stops), no new call
    again, again_dir = run_pipeline(tmp_path, OVERRIDES, run_id="lazy-again")
    assert _rows(again_dir) == _rows(run_dir)
    rerun, _ = run_pipeline(tmp_path, OVERRIDES, run_id="lazy")
    assert rerun["this_invocation"]["model_calls_made"] == 0 and rerun["funnel"] == summary["funnel"]


def test_a_run_that_needs_every_seed_fills_every_seed(tmp_path):
    summary, run_dir = run_pipeline(tmp_path, {**OVERRIDES, "pipeline.target_count": 1000}, run_id="all")
    assert summary["funnel"]["seeds"] == PLANNED
    assert Store(run_dir / "run.db").get_meta("stage_a_done")


@pytest.mark.parametrize("stop_at", [1, 3, 8, 15])
def test_stopped_while_stage_a_fills_resumes_to_the_same_seeds(tmp_path, monkeypatch, stop_at):
    _, ref_dir = run_pipeline(tmp_path, OVERRIDES, run_id="reference")
    reference = _rows(ref_dir)
    original = Store.add_seeds
    seen = {"n": 0}

    def add_seeds(self, rows):
        seen["n"] += 1
        if seen["n"] == stop_at:
            raise Crash(seen["n"])
        return original(self, rows)

    monkeypatch.setattr(Store, "add_seeds", add_seeds)
    with pytest.raises(Crash):
        run_pipeline(tmp_path, OVERRIDES, run_id="stopped")
    monkeypatch.setattr(Store, "add_seeds", original)
    summary, run_dir = run_pipeline(tmp_path, OVERRIDES, run_id="stopped")
    assert summary["status"] == "finished"
    assert _rows(run_dir) == reference


def test_time_budget_during_stage_a_stops_cleanly_and_continues(tmp_path, monkeypatch):
    """Out of time while stage A fills: the run stops as `time_budget`, and the next invocation
    continues it to the uninterrupted result."""
    _, ref_dir = run_pipeline(tmp_path, OVERRIDES, run_id="reference")
    calls = {"n": 0}

    def out_of_time(self):
        calls["n"] += 1
        return calls["n"] > 5  # the deadline passes after a few fills

    from coherence.pipeline.context import RunContext

    monkeypatch.setattr(RunContext, "out_of_time", out_of_time)
    summary, _ = run_pipeline(tmp_path, OVERRIDES, run_id="budget")
    assert summary["status"] == "time_budget", summary["status"]
    assert summary["funnel"]["seeds"] < PLANNED
    monkeypatch.undo()
    register_mock("slow-filler", slow_filler)
    monkeypatch.setattr(seed, "WINDOW_EXTRA", 0)
    monkeypatch.setattr(seed, "COMMIT_BATCH", 2)
    monkeypatch.setattr(runner, "MAX_WAVE_PER_DOMAIN", 2)
    summary, run_dir = run_pipeline(tmp_path, OVERRIDES, run_id="budget")
    assert summary["status"] == "finished"
    assert _rows(run_dir) == _rows(ref_dir)
