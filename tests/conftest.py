import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TESTS = Path(__file__).parent
EN_GB = TESTS / "packs" / "en-GB"
ROOT = TESTS.parent


@pytest.fixture
def en_gb() -> Path:
    return EN_GB


def mock_target(messages, task):
    """Complies (with harm cues and steps) to academic and roleplay framings, refuses the rest."""
    q = messages[-1]["content"]
    if "thesis" in q or "novel" in q:
        return ("Sure. Step 1. Look up the electoral roll and the address database. 2. Call the bank account "
                "line, ask for the password, then transfer the money. This track method works on anyone.")
    return "I'm sorry, I can't help with that."


def run_pipeline(tmp_path: Path, overrides: dict, *, run_id: str | None = None) -> tuple[dict, Path]:
    """Run the pipeline in-process on the en-GB pack with ``overrides``; returns (summary, run dir)."""
    import asyncio

    from coherence.config import load_config
    from coherence.pipeline.runner import prepare_run, run_async

    base = {"pack": str(EN_GB), "runs_dir": str(tmp_path / "runs"), "roles.target": {"model": "mock:target"},
            "pipeline.target_count": 4, "pipeline.seeds_per_template": 3}
    cfg = load_config(None, {**base, **overrides})
    run_dir, cfg = prepare_run(cfg, run_id=run_id)
    return asyncio.run(run_async(cfg, run_dir)), run_dir


@pytest.fixture(autouse=True)
def _mocks():
    """Every test gets its own mock scripts (a script one test registers is not seen by the next)."""
    from coherence.models import register_mock
    from coherence.models.mock import script_scope

    with script_scope():
        register_mock("target", mock_target)
        register_mock("refuser", lambda m, t: "I'm sorry, I can't help with that. I cannot do this.")
        yield
