"""A run killed with SIGKILL midway resumes with no lost and no duplicated rows."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import EN_GB, TESTS

SCRIPT = r"""
import asyncio, sys, time
sys.path.insert(0, {tests!r})
from conftest import mock_target
from coherence.models import register_mock
from coherence.config import load_config
from coherence.pipeline.runner import prepare_run, run_async

def slow_target(messages, task):
    time.sleep(0.03)
    return mock_target(messages, task)

register_mock("target", slow_target)
cfg = load_config(None, {{"pack": {pack!r}, "runs_dir": {runs!r}, "roles.target": {{"model": "mock:target"}},
                          "pipeline.target_count": 6, "pipeline.seeds_per_template": 4}})
run_dir, cfg = prepare_run(cfg, run_id=sys.argv[1])
asyncio.run(run_async(cfg, run_dir))
"""


def _start(tmp_path, run_id):
    script = SCRIPT.format(tests=str(TESTS), pack=str(EN_GB), runs=str(tmp_path / "runs"))
    return subprocess.Popen([sys.executable, "-c", script, run_id], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _count(db, sql):
    try:
        return db.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _snapshot(db_path):
    db = sqlite3.connect(db_path)
    out = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
           for t in ("seeds", "attempts", "candidates", "verdicts", "triplets", "calls")}
    out["triplet_rows"] = sorted(db.execute("SELECT seed_id, status, prompt, chosen, rejected FROM triplets"))
    out["seed_rows"] = sorted(db.execute("SELECT id, status, stage, reason FROM seeds"))
    out["attempt_rows"] = sorted(db.execute("SELECT seed_id, attempt, strategy, response, score FROM attempts"))
    db.close()
    return out


def test_sigkill_midway_then_resume_matches_uninterrupted(tmp_path):
    # reference: the same config, uninterrupted
    ref = _start(tmp_path, "reference")
    assert ref.wait(120) == 0, ref.stderr.read().decode()
    reference = _snapshot(tmp_path / "runs" / "reference" / "run.db")
    assert reference["triplets"] > 0

    killed_at = []
    for kill_after in (3, 9):  # kill twice, at different depths, then let it finish
        proc = _start(tmp_path, "victim")
        db_path = tmp_path / "runs" / "victim" / "run.db"
        deadline = time.time() + 60
        while time.time() < deadline:
            if db_path.exists():
                db = sqlite3.connect(db_path)
                n = _count(db, "SELECT COUNT(*) FROM attempts")
                db.close()
                if n >= kill_after:
                    break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at.append(n)
    final = _start(tmp_path, "victim")
    assert final.wait(120) == 0, final.stderr.read().decode()
    resumed = _snapshot(tmp_path / "runs" / "victim" / "run.db")
    assert killed_at[0] < reference["attempts"], "the kill must land before the run finished"
    assert resumed == reference
