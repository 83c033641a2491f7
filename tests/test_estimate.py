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


def test_estimate_counts_the_fills_a_pack_has_and_warns_when_the_target_is_out_of_reach():
    pack = load_pack(EN_GB)
    small = load_config(None, {"pack": str(EN_GB), "pipeline.seeds_per_template": 3, "pipeline.target_count": 4})
    est = estimate(pack, small)
    assert est["warnings"] == [] and est["expected_accepted"] == 4
    # more fills asked than the slot values allow: the seeds are what the pack has, and the fix says so
    big = load_config(None, {"pack": str(EN_GB), "pipeline.seeds_per_template": 10_000,
                             "pipeline.target_count": 10_000})
    est = estimate(pack, big)
    distinct = est["assumptions"]["distinct_fills"]
    assert est["assumptions"]["seeds"] == distinct < 10_000
    assert est["expected_accepted"] < 10_000
    (warning,) = est["warnings"]
    assert "short of target_count 10,000" in warning and "variants_per_fill" in warning
    doubled = load_config(None, {"pack": str(EN_GB), "pipeline.seeds_per_template": 10_000,
                                 "pipeline.variants_per_fill": 2})
    assert estimate(pack, doubled)["assumptions"]["seeds"] == 2 * distinct


def test_a_role_price_prices_a_model_litellm_does_not_know():
    from coherence.config import ModelSpec
    from coherence.models import price

    unknown = ModelSpec(model="hosted_vllm/my-org/my-model", api_base="http://localhost:8000/v1")
    assert price(unknown, 1_000, 1_000) is None
    priced = unknown.model_copy(update={"price": {"input": 3.0, "output": 15.0}})
    priced = ModelSpec.model_validate(priced.model_dump())
    assert price(priced, 1_000_000, 100_000) == 3.0 + 1.5
    cfg = load_config(None, {"pack": str(EN_GB), "roles.target": priced.model_dump(mode="json")})
    target = next(r for r in estimate(load_pack(EN_GB), cfg)["roles"] if r["role"] == "target")
    assert target["cost_max_usd"] > 0
