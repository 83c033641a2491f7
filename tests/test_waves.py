"""Waves overlap (the next one starts before the current one finishes), and a run stopped at any
commit, or between a wave's last commit and the choice of the next waves, resumes to the same data."""

import sqlite3

import pytest
from conftest import run_pipeline

from coherence.pipeline import runner
from coherence.store import Store

# small waves, so that a small pack needs many of them
OVERRIDES = {"pipeline.target_count": 14, "pipeline.seeds_per_template": 4, "pipeline.domain_patience": None}


class Crash(Exception):
    pass


def _rows(run_dir):
    db = sqlite3.connect(run_dir / "run.db")
    out = {
        "seeds": sorted(db.execute("SELECT id, wave, status, stage, reason FROM seeds")),
        "triplets": sorted(db.execute("SELECT seed_id, status, reason, prompt, chosen, rejected FROM triplets")),
        "attempts": sorted(db.execute("SELECT seed_id, attempt, strategy, response, jailbroken FROM attempts")),
        "chosen": sorted(db.execute("SELECT seed_id, slot FROM candidates WHERE chosen = 1")),
    }
    db.close()
    return out


@pytest.fixture
def small_waves(monkeypatch):
    monkeypatch.setattr(runner, "MAX_WAVE_PER_DOMAIN", 2)


def test_next_wave_starts_before_the_current_one_has_committed(tmp_path, small_waves, monkeypatch):
    appended = []  # (wave, seeds of the earlier waves not committed yet when it started)
    original = runner.Waves._append

    def spy(self, number):
        store = self.ctx.store
        appended.append((number, store.count("seeds", f"wave < {number} AND status IN ('active','jailbroken',"
                                                      f"'responded')")))
        original(self, number)

    monkeypatch.setattr(runner.Waves, "_append", spy)
    summary, run_dir = run_pipeline(tmp_path, OVERRIDES, run_id="overlap")
    assert summary["status"] == "finished"
    assert len(appended) >= 4, appended
    # every wave after the first was started while an earlier one still had seeds at work
    assert all(pending > 0 for _, pending in appended[1:]), appended
    assert Store(run_dir / "run.db").get_meta("topped_up") >= len(appended) - 2


def test_one_wave_at_a_time_when_asked(tmp_path, small_waves, monkeypatch):
    pending_at_start = []
    original = runner.Waves._append

    def spy(self, number):
        store = self.ctx.store
        pending_at_start.append((store.count("seeds", "status IN ('active','jailbroken','responded') "
                                                      "AND wave IS NOT NULL"), len(store.seeds(wave=number))))
        original(self, number)

    monkeypatch.setattr(runner.Waves, "_append", spy)
    summary, _ = run_pipeline(tmp_path, {**OVERRIDES, "pipeline.open_waves": 1}, run_id="serial")
    assert summary["status"] == "finished"
    assert len(pending_at_start) >= 3
    # each wave started when the waves before it were done: its own seeds (at most 2 per domain here,
    # 4 in all) are the only ones at work; with open_waves 2 the earlier wave's are too
    assert all(pending == own <= 4 for pending, own in pending_at_start), pending_at_start


@pytest.mark.parametrize("where", ["commit", "top_up"])
def test_stop_at_any_commit_resumes_to_the_uninterrupted_result(tmp_path, small_waves, monkeypatch, where):
    _, ref_dir = run_pipeline(tmp_path, OVERRIDES, run_id="reference")
    reference = _rows(ref_dir)
    commits = len(reference["triplets"]) + sum(1 for s in reference["seeds"] if s[2] == "no_jailbreak")
    waves = max(s[1] or 0 for s in reference["seeds"])
    assert waves >= 4 and commits >= 10

    original_committed, original_set_meta = runner.Waves._committed, Store.set_meta
    stops = sorted({1, 3, 7, commits // 2, commits - 1} if where == "commit" else {1, 2, 3, waves})
    for stop_at in stops:
        seen = {"n": 0}

        async def committed(self, i, _stop=stop_at, _seen=seen):
            _seen["n"] += 1
            if _seen["n"] == _stop:  # after the seed's commit, before a top-up it may owe
                raise Crash(i)
            await original_committed(self, i)

        def set_meta(self, key, value, _stop=stop_at, _seen=seen):
            if key == "topped_up":
                _seen["n"] += 1
                if _seen["n"] == _stop:  # waves started, the top-up not yet marked done
                    raise Crash(key)
            original_set_meta(self, key, value)

        if where == "commit":
            monkeypatch.setattr(runner.Waves, "_committed", committed)
        else:
            monkeypatch.setattr(Store, "set_meta", set_meta)
        run_id = f"stopped-{where}-{stop_at}"
        with pytest.raises(Crash):
            run_pipeline(tmp_path, OVERRIDES, run_id=run_id)
        monkeypatch.setattr(runner.Waves, "_committed", original_committed)
        monkeypatch.setattr(Store, "set_meta", original_set_meta)
        summary, run_dir = run_pipeline(tmp_path, OVERRIDES, run_id=run_id)
        assert summary["status"] == "finished"
        assert _rows(run_dir) == reference, f"stopped at {where} {stop_at}"


def test_a_time_budget_stops_after_whole_blocks_not_mid_wave(tmp_path):
    """Within a wave, seeds are served in blocks of the target's concurrency: an invocation stopped by its
    time budget has finished (and committed) its first seeds instead of taking every seed of the wave to
    the same attempt (first come, first served across the wave, a resumed default run committed none of
    161 seeds in 12 minutes)."""
    import asyncio

    from coherence.models import register_mock

    async def slow_refuser(messages, task):
        await asyncio.sleep(0.05)
        return "I'm sorry, I can't help with that. I cannot do this."

    register_mock("slow-refuser", slow_refuser)
    summary, run_dir = run_pipeline(tmp_path, {
        "roles.target": {"model": "mock:slow-refuser", "max_concurrency": 2},
        "pipeline.target_count": 40, "pipeline.seeds_per_template": 6, "pipeline.domain_patience": None,
        "pipeline.open_waves": 1, "pipeline.max_minutes": 0.05}, run_id="blocks")
    assert summary["status"] == "time_budget"
    db = sqlite3.connect(run_dir / "run.db")
    wave = db.execute("SELECT status FROM seeds WHERE wave = 1 ORDER BY ord").fetchall()
    attempts = db.execute("SELECT count(*) FROM attempts").fetchone()[0]
    done = [s for (s,) in wave if s == "no_jailbreak"]
    # the budget allowed fewer attempts than the wave needs (5 per seed, the target refuses them all)
    assert attempts < 5 * len(wave) - 10, (attempts, len(wave))
    # ... and the seeds it finished are the wave's first ones, committed in order
    assert len(done) >= 2, (attempts, wave)
    assert [s for (s,) in wave[:len(done)]] == done
