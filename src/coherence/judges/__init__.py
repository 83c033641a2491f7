"""Judges: typed verdicts, LLM judges on pack prompt templates, heuristic offline judges, ensembles."""

from __future__ import annotations

from typing import Protocol

from coherence.config import ModelSpec
from coherence.judges.heuristic import HeuristicJudge
from coherence.judges.llm import LLMJudge, render_policy, wrap
from coherence.judges.verdict import Verdict
from coherence.models import ModelPool
from coherence.packs.loader import Pack


class Judge(Protocol):
    name: str

    async def query_harm_async(self, subcategory: str, query: str) -> Verdict: ...
    async def response_harm_async(self, subcategory: str, query: str, response: str) -> Verdict: ...
    async def quality_async(self, subcategory: str, query: str, response: str) -> Verdict: ...
    async def filter_async(self, subcategory: str, query: str, rejected: str, chosen: str) -> Verdict: ...


def make_judge(spec: ModelSpec, *, pool: ModelPool, pack: Pack, role: str) -> Judge:
    """``offline:judge*`` specs give heuristic judges; any other spec an LLM judge on that model.
    ``role`` is the role slot (``query_judge``, ``filter_judges[1]``) stamped on every verdict."""
    if spec.heuristic_judge:
        return HeuristicJudge(pack, spec.model.split(":", 1)[1], slot=role)
    return LLMJudge(pool.get(spec), pack, role=role)


def unanimous(verdicts: list[Verdict]) -> tuple[bool, str]:
    """The stage-D rule: every judge passes explicitly; an unscored verdict is a rejection."""
    for v in verdicts:
        who = f"{v.slot} ({v.judge})" if v.slot else v.judge
        if v.passed is None:
            return False, f"{who}: unscored ({v.reason})"
        if not v.passed:
            return False, f"{who}: {v.reason}"
    return True, f"all {len(verdicts)} judges pass"


__all__ = ["HeuristicJudge", "Judge", "LLMJudge", "Verdict", "make_judge", "render_policy", "unanimous", "wrap"]
