"""Agreement between raters (the stage-D judges, human reviewers, or reviewers against the judges):
Krippendorff's alpha through the ``krippendorff`` package, plus the plain share of units on which every
rater agreed. It sits under ``judges`` so that the report, the review app and the evaluation can all use it.

Alpha is undefined when every vote has the same value (no variation to agree on); it is reported as
None with that reason, never as 1.0 or 0.0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any


def alpha(units: dict[Any, dict[str, Any]], *, level: str = "nominal") -> dict[str, Any]:
    """Krippendorff's alpha of ``units`` (unit id -> {rater: value or None}); a rater with None on every unit
    still counts as a rater.

    Returns:
        ``{"alpha": float | None, "units": n units rated by two or more, "raters": n, "all_agree": share of
        those units where every rater gave the same value, "note": why alpha is None (or "")}``.
    """
    import krippendorff
    import numpy as np

    raters = sorted({r for votes in units.values() for r in votes})
    paired = {u: v for u, v in units.items() if sum(x is not None for x in v.values()) >= 2}
    values = sorted({x for v in paired.values() for x in v.values() if x is not None}, key=str)
    code = {x: i for i, x in enumerate(values)}
    out: dict[str, Any] = {"alpha": None, "units": len(paired), "raters": len(raters), "all_agree": None, "note": ""}
    if paired:
        same = sum(1 for v in paired.values() if len({x for x in v.values() if x is not None}) == 1)
        out["all_agree"] = same / len(paired)
    if len(raters) < 2 or not paired:
        out["note"] = "needs two raters on the same units"
        return out
    if len(values) < 2:
        out["note"] = f"every vote is {values[0]!r}: no variation, alpha undefined"
        return out
    matrix = np.array([[code[v[r]] if v.get(r) is not None else np.nan for v in paired.values()] for r in raters],
                      dtype=float)
    try:
        a = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))
    except (ValueError, ZeroDivisionError) as exc:
        out["note"] = str(exc)
        return out
    out["alpha"] = None if math.isnan(a) else a
    if out["alpha"] is None:
        out["note"] = "alpha undefined on these votes"
    return out


def filter_agreement(votes: list[dict[str, Any]]) -> dict[str, Any]:
    """Alpha between the stage-D judges (each role slot one rater, so the same model in two slots
    counts twice) on the overall pass/fail and on each of the six criteria.

    Args:
        votes: the Store's ``report_filter_votes()`` rows (seed_id, slot, judge, passed, detail).
    """
    overall: dict[str, dict[str, Any]] = defaultdict(dict)
    criteria: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    labels: dict[str, str] = {}
    for v in votes:
        who = v.get("slot") or v["judge"]
        labels[who] = f"{who} · {v['judge']}" if who != v["judge"] else who
        overall[v["seed_id"]][who] = None if v["passed"] is None else bool(v["passed"])
        for name, ok in (v["detail"].get("criteria") or {}).items():
            criteria[name][v["seed_id"]][who] = bool(ok)
    judges = [labels[k] for k in sorted(labels)]
    return {"judges": judges,
            "rows": [{"what": "pass / fail", **alpha(overall)},
                     *({"what": name, **alpha(units)} for name, units in criteria.items())]}
