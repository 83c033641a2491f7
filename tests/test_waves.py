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


def _finish_run(tmp_path, run_id, finish, monkeypatch):
    """A run against a batched ``local:`` target whose every batch takes 0.3 s (no weights), under a
    6-second budget: like the default run, it has two or three blocks of seeds under attack at a time."""
    import time

    from coherence.models.base import ModelOutput
    from coherence.models.local import LocalChat

    def generate(self, conversations, params):
        time.sleep(0.3)
        return [ModelOutput(text="I'm sorry, I can't help with that. I cannot do this.", input_tokens=1,
                            output_tokens=1, cost=0.0) for _ in conversations]

    monkeypatch.setattr(LocalChat, "_generate_batch", generate)
    monkeypatch.setattr(LocalChat, "loaded", lambda self: True)
    summary, run_dir = run_pipeline(tmp_path, {
        "roles.target": {"model": "local:fake-batches", "max_concurrency": 8},
        "pipeline.target_count": 400, "pipeline.seeds_per_template": 40, "pipeline.domain_patience": None,
        "pipeline.max_minutes": 0.1, "pipeline.finish_started_seeds": finish}, run_id=run_id)
    db = sqlite3.connect(run_dir / "run.db")
    unfinished = db.execute("SELECT count(DISTINCT s.id) FROM seeds s JOIN attempts a ON a.seed_id = s.id "
                            "WHERE s.status = 'active'").fetchone()[0]
    finished = db.execute("SELECT count(*) FROM seeds WHERE status = 'no_jailbreak'").fetchone()[0]
    if finish:  # in commit order, every seed before the first one not started has finished
        rows = db.execute("SELECT s.ord, s.status, (SELECT count(*) FROM attempts a WHERE a.seed_id = s.id) "
                          "FROM seeds s WHERE s.wave IS NOT NULL ORDER BY s.wave, s.ord").fetchall()
        first = next((k for k, (_, status, n) in enumerate(rows) if status == "active" and not n), len(rows))
        assert all(status != "active" for _, status, _ in rows[:first]), rows[:first + 1]
    db.close()
    return summary, unfinished, finished


def test_near_its_time_budget_a_run_finishes_the_seeds_under_attack_instead_of_starting_new_ones(tmp_path,
                                                                                                  monkeypatch):
    monkeypatch.setattr(runner, "MAX_WAVE_PER_DOMAIN", 3)  # waves close while it finishes
    """The default run on a float32 CPU left 71 seeds (212 attempts, a fifth of its work) half-attacked at
    its deadline, and 4 jailbroken seeds waiting behind them: none of it counted in that invocation.
    Near the deadline (``pipeline.finish_started_seeds``, on by default) a seed starts only if it and the
    seeds under attack can finish, so the ones under attack finish and commit."""
    off, unfinished_off, finished_off = _finish_run(tmp_path, "no-finish", False, monkeypatch)
    assert off["status"] == "time_budget" and "finishing" not in off
    assert unfinished_off >= 8, unfinished_off  # the deadline cut through the seeds under attack
    summary, unfinished, finished = _finish_run(tmp_path, "finish", True, monkeypatch)
    assert summary["status"] == "time_budget"
    assert summary["finishing"]["seconds_before_deadline"] > 0
    assert unfinished <= unfinished_off // 4, (unfinished, unfinished_off)
    assert finished >= finished_off - 8, (finished, finished_off)  # as many seeds committed (give or take a batch)


def test_the_finishing_gate_stops_only_calls_that_could_not_commit_in_this_invocation():
    import math
    from types import SimpleNamespace

    attempted = {"started"}
    ctx = SimpleNamespace(finishing_since=None, may_start_seed=lambda seed_id: True, starting=set(),
                          store=SimpleNamespace(count=lambda table, where, seed_id: int(seed_id in attempted)))
    waves = runner.Waves.__new__(runner.Waves)
    waves.ctx = ctx
    waves.respond, waves.filter = runner.Turns(10), runner.Turns(10)
    assert waves._gate(3, "fresh", "target") is None  # far from the deadline: every call is made
    ctx.may_start_seed, ctx.finishing_since = (lambda seed_id: False), 40.0
    assert waves._gate(3, "started", "target") is None  # under attack: it finishes
    assert "no new seed" in waves._gate(3, "fresh", "target")
    assert "no new seed" in waves._gate(3, "fresh", "attacker")
    ctx.starting.add("fresh")  # let start at its attacker call: its target call is not stopped midway
    assert waves._gate(3, "fresh", "target") is None
    ctx.starting.clear()
    assert waves._gate(3, "fresh", "generator-0") is None  # stages C and D of a seed that can commit go on
    waves.filter.halt(2)  # seed 2 was not started: the seeds after it cannot commit in this invocation
    assert "cannot commit" in waves._gate(3, "started", "target")
    assert waves._gate(1, "started", "judge") is None
    assert waves.filter.stop == 2 and waves.respond.stop == math.inf


def test_a_seed_starts_near_the_deadline_only_if_the_seeds_under_attack_and_it_can_finish(tmp_path):
    import time
    from types import SimpleNamespace

    from coherence.config import load_config
    from coherence.pipeline.context import RunContext

    config = load_config(None, {"roles.target": {"model": "mock:target", "max_concurrency": 4}})
    stored = set()  # seeds with a stored attempt
    store = SimpleNamespace(remaining_attempts=lambda max_attempts: 12,  # e.g. 4 seeds with 2 attempts done
                            count=lambda table, where, seed_id: int(seed_id in stored))
    budget = SimpleNamespace(deadline=None)
    ctx = RunContext(store=store, pack=None, config=config, pool=SimpleNamespace(budget=budget))
    assert ctx.may_start_seed("a")  # no time budget
    budget.deadline = time.monotonic() + 100
    assert ctx.may_start_seed("a")  # no target call measured yet
    now = time.monotonic()
    ctx.target_latency.extend([5.0] * 30)
    ctx.target_done.extend(now - 60 + 2 * k for k in range(30))  # 30 answers in the last minute: 0.5 a second
    budget.deadline = now + 60
    # 12 remaining + 5 for "a": 17 / 0.5 a second + 2 latencies = 44 s: it starts
    assert ctx.may_start_seed("a") and ctx.finishing_since is None
    # "a" was let start but has no attempt stored yet: it counts, so "b" makes 22 attempts: 54 s
    assert ctx.may_start_seed("b")
    # and "c" 27: 64 s > 60 s left
    assert not ctx.may_start_seed("c") and 59 <= ctx.finishing_since <= 60
    stored.update("ab")  # their first attempts are stored: remaining_attempts counts them (the stub: 12)
    assert ctx.may_start_seed("c") and ctx.starting == {"c"}
    ctx.target_latency.extend([13.0] * 64)  # slow calls: "e"'s own 5 attempts in a row take 65 s
    assert not ctx.may_start_seed("e")
    config.pipeline.finish_started_seeds = False
    assert ctx.may_start_seed("e")


@pytest.mark.parametrize("after_attempts", [47, 63])
def test_a_wave_that_closes_while_the_run_finishes_lets_the_next_waves_started_seeds_commit(
        tmp_path, monkeypatch, after_attempts):
    """The default run stopped starting seeds 91 s before its deadline, then the last seed of wave 2
    committed; its top-up was refused because a later seed had stopped, which halted every seed of wave 3
    (26 of them under attack, 94 attempts) for the rest of the invocation. While finishing, the top-up is
    done (it reads only what wave 2 committed), so the seeds of wave 3 before the first one not started
    finish and commit. New seeds stop after a fixed number of attempts here, so the timing is exact."""
    from coherence.pipeline import context

    def may_start_seed(self, seed_id):
        if self.store.count("attempts") < after_attempts:
            return True
        self.finishing_since = self.finishing_since or 1.0
        return False

    monkeypatch.setattr(context.RunContext, "may_start_seed", may_start_seed)
    monkeypatch.setattr(runner, "MAX_WAVE_PER_DOMAIN", 3)
    summary, run_dir = run_pipeline(tmp_path, {
        "roles.target": {"model": "mock:refuser", "max_concurrency": 4}, "pipeline.target_count": 400,
        "pipeline.seeds_per_template": 40, "pipeline.domain_patience": None, "pipeline.max_minutes": 10},
        run_id="finishing-top-up")
    assert summary["status"] == "time_budget" and summary["finishing"]
    db = sqlite3.connect(run_dir / "run.db")
    rows = db.execute("SELECT s.wave, s.status, (SELECT count(*) FROM attempts a WHERE a.seed_id = s.id) "
                      "FROM seeds s WHERE s.wave IS NOT NULL ORDER BY s.wave, s.ord").fetchall()
    first = next((k for k, (_, status, n) in enumerate(rows) if status == "active" and not n), None)
    assert first is not None and rows[first][0] > 1  # the first seed not started is in a later wave than the first
    assert all(status == "no_jailbreak" for _, status, _ in rows[:first]), rows[:first + 1]
