"""--dry-run estimates calls, tokens and cost per role and calls nothing."""

import os
import subprocess
import sys

from conftest import EN_GB, ROOT

from coherence.config import load_config
from coherence.packs.loader import load_pack
from coherence.pipeline.estimate import estimate


def test_estimate_bounds_follow_the_config():
    cfg = load_config(None, {"pack": str(EN_GB), "pipeline.seeds_per_template": 3, "pipeline.max_attempts": 5,
                             "roles.target": {"model": "openai/gpt-4.1-mini"}})
    est = estimate(load_pack(EN_GB), cfg, jailbreak_rate=1.0, pass_rate=1.0)
    rows = {r["role"]: r for r in est["roles"] if r["role"] in ("target", "slot_filler")}
    assert rows["slot_filler"]["calls_max"] == 6 * 3
    assert rows["target"]["calls_max"] == 18 * 5
    assert rows["target"]["calls_expected"] == 18  # every first attempt jailbreaks: one attempt per seed
    assert rows["target"]["cost_max_usd"] > 0
    judges = [r for r in est["roles"] if r["model"].startswith("offline:judge")]
    assert judges and all(r["calls_max"] == 0 for r in judges)


def test_dry_run_on_paper_config_prints_every_role_and_calls_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-c", "from coherence.cli import app; app()", "run", "--config",
                          str(ROOT / "configs" / "paper.yaml"), "--dry-run", "--runs-dir", str(tmp_path)],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    for role in ("slot_filler", "attacker", "target", "response_judge", "query_judge", "generators",
                 "filter_judges"):
        assert role in out.stdout
    assert "nothing was called" in out.stdout and "total USD" in out.stdout
    assert not any(tmp_path.iterdir())  # no run folder, no store
