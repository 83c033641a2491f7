"""A small finished run (en-GB test pack, copied so that pack proposals can be decided) for the review
app's tests, built once per session and copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from conftest import EN_GB, mock_target, run_pipeline

XSS = '<script>window.__xss = 1; alert("xss")</script><img src=x onerror="window.__xss = 2"> plain tail'


def build_run(base: Path) -> Path:
    from coherence.models import register_mock

    register_mock("target", mock_target)
    pack = base / "en-GB"
    shutil.copytree(EN_GB, pack)
    proposals = {"proposals": [{"id": "prop-slot-value-test000001", "kind": "slot_value", "slot": "city",
                                "text": "York", "model": "mock:proposer", "status": "proposed"}]}
    (pack / "proposals.yaml").write_text(yaml.safe_dump(proposals), encoding="utf-8")
    _, run_dir = run_pipeline(base, {"pack": str(pack), "pipeline.target_count": 6}, run_id="review-run")
    return run_dir


def copy_run(template: Path, dest: Path) -> Path:
    """A private copy of the run and of its pack (config.yaml points at the copy)."""
    pack = dest / "en-GB"
    shutil.copytree(template.parent.parent / "en-GB", pack)
    run_dir = dest / "ko-review-run-copy"
    shutil.copytree(template, run_dir, ignore=shutil.ignore_patterns("dataset", "*.db-wal", "*.db-shm"))
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    cfg["pack"] = str(pack)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return run_dir


def plant_xss(run_dir: Path) -> str:
    """Put the XSS payload into the first triplet's r-; returns its seed id."""
    from coherence.store import Store

    store = Store(run_dir / "run.db")
    try:
        t = next(store.triplets())
        store.record_triplet(seed_id=t["seed_id"], domain=t["domain"], status=t["status"], reason=t["reason"],
                             prompt=t["prompt"], chosen=t["chosen"], rejected=XSS + t["rejected"],
                             provenance=t["provenance"], verdicts=[])
        return t["seed_id"]
    finally:
        store.close()
