"""Typed judge verdicts. A reply that cannot be parsed is *unscored* with a reason, never a default score."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Verdict(BaseModel):
    judge: str
    """The judge's model (model spec, or offline:judge* for heuristic judges): data, not identity."""
    slot: str = ""
    """The role slot that gave the verdict (``response_judge``, ``filter_judges[2]``): its identity in the
    store, so two judges on one model with different params never overwrite each other."""
    task: str
    """query_harm | response_harm | response_quality | filter"""
    score: int | None = None
    """The rubric score; None when unscored."""
    passed: bool | None = None
    """For filter verdicts: all six criteria met; None when unscored."""
    reason: str = ""
    raw: str = ""
    """The judge's raw reply (heuristic judges: a summary of what they matched)."""
    detail: dict[str, Any] = Field(default_factory=dict)
    """Per-criterion booleans, P1-P3 flags, parse errors."""

    def row(self) -> dict[str, Any]:
        return self.model_dump()
