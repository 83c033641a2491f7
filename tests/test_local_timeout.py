"""A local model's timeout bounds a stuck generation, not the time a call waits behind other batches,
and a generation that finishes after its caller gave up serves the retry (nothing is generated twice)."""

import asyncio
import time

from coherence.config import ModelSpec
from coherence.models import ModelPool
from coherence.models.base import ModelOutput
from coherence.models.local import LocalChat
from coherence.store import Store


def _fake_generate(durations):
    """``_generate_batch`` that takes ``durations[conversation text]`` seconds (default 0.3) per batch."""
    calls = []

    def generate(self, conversations, params):
        calls.append([c[-1]["content"] for c in conversations])
        time.sleep(max(durations.get(c[-1]["content"], 0.3) for c in conversations))
        return [ModelOutput(text="answer to " + c[-1]["content"], input_tokens=1, output_tokens=1, cost=0.0)
                for c in conversations]

    return generate, calls


def test_queueing_behind_other_batches_is_not_a_timeout(tmp_path, monkeypatch):
    generate, calls = _fake_generate({})
    monkeypatch.setattr(LocalChat, "_generate_batch", generate)
    # batches of 2 at 0.3 s each: the last of 8 calls waits ~0.9 s, past the 0.5 s timeout
    spec = ModelSpec(model="local:fake", max_concurrency=2, timeout=0.5, max_retries=0)
    store = Store(tmp_path / "c.db")
    pool = ModelPool(store, None)

    async def go():
        model = pool.get(spec)
        outs = await asyncio.gather(*(model.chat_async([{"role": "user", "content": f"q{i}"}], role="target")
                                      for i in range(8)))
        await pool.aclose()
        return outs

    outs = asyncio.run(go())
    assert [o.text for o in outs] == [f"answer to q{i}" for i in range(8)]
    assert sum(map(len, calls)) == 8 and pool.stats.retries == 0
    assert store.call_totals()["errors"] == {}


def test_a_late_generation_serves_the_retry(tmp_path, monkeypatch):
    generate, calls = _fake_generate({"stuck": 1.0})
    monkeypatch.setattr(LocalChat, "_generate_batch", generate)
    spec = ModelSpec(model="local:fake", max_concurrency=4, timeout=0.4, max_retries=3)
    store = Store(tmp_path / "c.db")
    pool = ModelPool(store, None)

    async def go():
        model = pool.get(spec)
        out = await model.chat_async([{"role": "user", "content": "stuck"}], role="target")
        await pool.aclose()
        return out

    out = asyncio.run(go())
    assert out.text == "answer to stuck"
    assert calls == [["stuck"]]  # generated once: the retries joined it, then took its late answer
    assert pool.stats.retries >= 1 and store.call_totals()["errors"].get("timeout", 0) >= 1
