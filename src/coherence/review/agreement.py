"""Agreement of the human reviewers with each other and with the judge ensemble (Krippendorff's alpha,
nominal: :func:`coherence.judges.agreement.alpha`, the one the report uses for the filter judges).

Units are (triplet, question) for the nine yes/no questions; "unsure" counts as no answer. The judge
ensemble's label of a filter criterion follows the pipeline's rule (``unanimous``: yes only when every
filter judge said yes); P1-P3 come from the response judge's verdict on the chosen r+ (when that judge
reports them: the offline heuristic judge does; an LLM response judge gives only a score).

``summarize(store)`` returns::

    {"reviewers": [{"name": str, "triplets_rated": int, "revoked": bool}],
     "triplets": int,                 # triplets in the run (any filter status)
     "triplets_rated": int,           # rated by at least one reviewer
     "ratings": int,                  # rating rows, re-ratings included (the latest of each counts)
     "questions": [str],              # the nine question ids
     "between_reviewers": AGREEMENT,  # all reviewers as coders
     "reviewers_vs_judges": AGREEMENT | {..., "per_reviewer": {name: AGREEMENT}},
     "ab": {"r_plus_vs_r_minus" | "thick_vs_thin":
            {"votes": int, "preferred": {side: int}, "share_r_plus": float | None,
             "between_reviewers": AGREEMENT}},
     "rejected_by_reviewers": [seed_id],   # what `--exclude-rejected` leaves out
     "ensemble_rule": "unanimous"}

    AGREEMENT = {"alpha": float | None, "why": str (when alpha is None: the note of ``judges.agreement.alpha``),
                 "units": int (units with two or more answers), "percent_agreement": float | None (pairwise),
                 "all_agree": float | None (share of units on which every answer is the same),
                 "per_question": {question: {"alpha", "why", "units", "percent_agreement"}}}
"""

from __future__ import annotations

from typing import Any

from coherence.export import FILTER_CRITERIA, rejected_by_reviewers
from coherence.judges.agreement import alpha
from coherence.store import Store

P_IDS = ("p1", "p2", "p3")
CODE = {"yes": 1.0, "no": 0.0}
PAIRS = ("r_plus_vs_r_minus", "thick_vs_thin")
AB_CODE = {"r_plus": 1.0, "r_minus": 0.0, "thin": 0.0, "same": 2.0}


def _percent(units: dict[tuple[str, str], dict[str, float | None]]) -> float | None:
    agree = total = 0
    for votes in units.values():
        vals = [v for v in votes.values() if v is not None]
        for i in range(len(vals)):
            for j in range(i + 1, len(vals)):
                total += 1
                agree += vals[i] == vals[j]
    return round(agree / total, 4) if total else None


def agreement(coders: dict[str, dict[tuple[str, str], float]], questions: list[str]) -> dict[str, Any]:
    """Alpha (:func:`coherence.judges.agreement.alpha`, rounded to four places) and pairwise percent
    agreement over units ``(seed_id, question)``; ``coders`` maps a coder to its coded answers (1 yes, 0 no;
    absent = no answer)."""
    def units(keep: Any) -> dict[tuple[str, str], dict[str, float | None]]:
        ids = sorted({u for c in coders.values() for u in c if keep(u)})
        return {u: {name: c.get(u) for name, c in coders.items()} for u in ids}

    def block(votes: dict[tuple[str, str], dict[str, float | None]]) -> dict[str, Any]:
        a = alpha(votes)
        value = None if a["alpha"] is None else round(a["alpha"], 4)
        return {"alpha": value, **({"why": a["note"]} if value is None else {}), "units": a["units"],
                "percent_agreement": _percent(votes),
                "all_agree": None if a["all_agree"] is None else round(a["all_agree"], 4)}

    out = block(units(lambda u: True))
    out["per_question"] = {q: block(units(lambda u, q=q: u[1] == q)) for q in questions}
    return out


def judge_labels(store: Store, seed_id: str, criteria: list[str]) -> dict[str, float]:
    """The judge ensemble's yes/no per question of one triplet (unanimous over the filter judges)."""
    out: dict[str, float] = {}
    filt = [v["detail"].get("criteria") for v in store.verdicts(seed_id, "filter")]
    filt = [c for c in filt if isinstance(c, dict)]
    for c in criteria:
        votes = [v[c] for v in filt if isinstance(v.get(c), bool)]
        if votes:
            out[c] = 1.0 if all(votes) else 0.0
    t = store.triplet(seed_id)
    generator = t["provenance"].get("generator") if t else None
    for v in store.verdicts(seed_id, "response_quality"):
        if generator and v["subject"] == f"candidate:{generator}":
            for p in P_IDS:
                if isinstance(v["detail"].get(p), bool):
                    out[p] = 1.0 if v["detail"][p] else 0.0
    return out


def summarize(store: Store) -> dict[str, Any]:
    """Agreement between reviewers and between reviewers and the judge ensemble; shape in the module doc.

    Args:
        store: the run's store (``ReviewRun.store`` or ``Store(run_dir / "run.db")``).
    """
    criteria = list(FILTER_CRITERIA)
    questions = criteria + list(P_IDS)
    latest = store.latest_reviews()
    people: dict[str, dict[tuple[str, str], float]] = {}
    ab: dict[str, dict[str, dict[tuple[str, str], float]]] = {p: {} for p in PAIRS}
    ab_votes: dict[str, dict[str, int]] = {p: {} for p in PAIRS}
    for r in latest:
        coded = people.setdefault(r["reviewer"], {})
        for q in questions:
            if r["answers"].get(q) in CODE:
                coded[(r["seed_id"], q)] = CODE[r["answers"][q]]
        for pair, entry in r["ab"].items():
            if pair in ab and entry.get("preferred") in AB_CODE:
                ab[pair].setdefault(r["reviewer"], {})[(r["seed_id"], pair)] = AB_CODE[entry["preferred"]]
                ab_votes[pair][entry["preferred"]] = ab_votes[pair].get(entry["preferred"], 0) + 1
    rated = sorted({r["seed_id"] for r in latest})
    ensemble: dict[tuple[str, str], float] = {}
    for seed in rated:
        ensemble.update({(seed, q): v for q, v in judge_labels(store, seed, criteria).items()})
    consensus: dict[tuple[str, str], float] = {}
    for unit in {u for c in people.values() for u in c}:
        vals = [c[unit] for c in people.values() if unit in c]
        if 2 * sum(vals) != len(vals):  # a tie has no majority
            consensus[unit] = 1.0 if 2 * sum(vals) > len(vals) else 0.0
    vs_judges = agreement({"reviewers (majority)": consensus, "judge ensemble": ensemble}, questions)
    vs_judges["per_reviewer"] = {name: {k: v for k, v in agreement({name: c, "judge ensemble": ensemble},
                                                                   questions).items() if k != "per_question"}
                                 for name, c in people.items()}
    counts: dict[str, int] = {}
    for r in latest:
        counts[r["reviewer"]] = counts.get(r["reviewer"], 0) + 1
    ab_out = {}
    for pair in PAIRS:
        votes = ab_votes[pair]
        total = sum(votes.values())
        block = agreement(ab[pair], [pair])
        block.pop("per_question")
        ab_out[pair] = {"votes": total, "preferred": votes,
                        "share_r_plus": round(votes.get("r_plus", 0) / total, 4) if total else None,
                        "between_reviewers": block}
    return {
        "reviewers": [{"name": r["name"], "triplets_rated": counts.get(r["name"], 0),
                       "revoked": r["revoked"] is not None} for r in store.reviewers()],
        "triplets": len(store.review_queue()), "triplets_rated": len(rated), "ratings": store.review_count(),
        "questions": questions,
        "between_reviewers": agreement(people, questions),
        "reviewers_vs_judges": vs_judges,
        "ab": ab_out,
        "rejected_by_reviewers": sorted(rejected_by_reviewers(store)),
        "ensemble_rule": "unanimous",
    }


def report_section(summary: dict[str, Any]) -> dict[str, Any]:
    """The "human review" section of ``coherence report`` (``build_report(..., human_review=...)``) from
    :func:`summarize`: reviewers, agreement rows ``{what, alpha, units, raters, all_agree, note}`` and the
    blind A/B table. Every value is plain data; the report escapes it."""
    def row(what: str, a: dict[str, Any], raters: int) -> dict[str, Any]:
        return {"what": what, "alpha": a["alpha"], "units": a["units"], "raters": raters,
                "all_agree": a["all_agree"], "note": a.get("why", "")}

    people = [r for r in summary["reviewers"] if r["triplets_rated"]]
    b, j = summary["between_reviewers"], summary["reviewers_vs_judges"]
    rows = [row("between reviewers: all nine questions", b, len(people)),
            row(f"reviewers (majority) vs judge ensemble ({summary['ensemble_rule']}): all questions", j, 2)]
    rows += [row(f"{name} vs judge ensemble", a, 2) for name, a in j["per_reviewer"].items()]
    per_q = {"title": "Per question (alpha; units answered by two or more)",
             "columns": ["question", "alpha between reviewers", "units", "alpha reviewers vs judges", "units"],
             "rows": [[q, b["per_question"][q]["alpha"], b["per_question"][q]["units"],
                       j["per_question"][q]["alpha"], j["per_question"][q]["units"]] for q in summary["questions"]]}
    ab = {"title": "Blind A/B (order randomised per rating)", "columns": ["pair", "votes", "r+ preferred",
                                                                          "other preferred", "same", "alpha"],
          "rows": [[pair, a["votes"], a["preferred"].get("r_plus", 0),
                    sum(v for k, v in a["preferred"].items() if k not in ("r_plus", "same")),
                    a["preferred"].get("same", 0), a["between_reviewers"]["alpha"]]
                   for pair, a in summary["ab"].items()]}
    rejected = summary["rejected_by_reviewers"]
    note = (f"{summary['triplets_rated']} of {summary['triplets']} triplets rated by {len(people)} reviewers "
            f"({summary['ratings']} ratings; the latest of each reviewer counts). Krippendorff's alpha, nominal; "
            f"'unsure' counts as no answer. {len(rejected)} triplets rejected by reviewers "
            f"(left out by --exclude-rejected).")
    return {"reviewers": [{"name": r["name"], "ratings": r["triplets_rated"]} for r in summary["reviewers"]],
            "agreement": rows, "tables": [per_q, ab], "note": note}


def section_for_run(run_dir: Any) -> dict[str, Any] | None:
    """:func:`report_section` of a run folder, or None when it has no rating (or is not a run)."""
    from pathlib import Path

    db = Path(run_dir) / "run.db"
    if not db.is_file():
        return None
    store = Store(db)
    try:
        return report_section(summarize(store)) if store.review_count() else None
    finally:
        store.close()
