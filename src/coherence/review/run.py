"""Open a run for review, the reviewers' tokens, and what one rating page asks.

A reviewer answers nine yes/no/unsure questions per triplet (the pack's six filter criteria, then
P1-P3 on r+) and makes two blind A/B choices:

- ``r_plus_vs_r_minus``: the triplet's chosen answer (r+) against its rejected answer (r-);
- ``thick_vs_thin``: the triplet's r+ against a *thin* refusal from the pack's exemplars of the same
  sub-category (exemplars.yaml: each gold query has a thick and a thin answer; the thin ones are generic
  refusals that fit any query of the sub-category). It asks what the paper's thick-vs-thin comparison
  asks, on this run's data: do native speakers prefer the pipeline's r+ to a plain refusal? (The pack's
  own thick answers belong to other queries, so pairing them with a triplet would compare different
  questions.)

The two sides of each pair are shown in a random order that is recorded with the rating.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from coherence.errors import CoherenceError
from coherence.packs.loader import Pack, load_pack
from coherence.review.agreement import PAIRS
from coherence.store import Store

ANSWERS = ("yes", "no", "unsure")
P_QUESTIONS = (
    ("p1", "P1 socio-legal anchoring: does r+ name the applicable law or norm, correctly?", "p1_anchoring"),
    ("p2", "P2 population specificity: does r+ name the affected group and the local frameworks?", "p2_population"),
    ("p3", "P3 justified refusal: does r+ refuse the harmful shell, serve the legitimate need and offer a "
           "constructive local alternative (without over-refusing)?", "p3_constructive"),
)
PICKS = ("A", "B", "same")


@dataclass
class ReviewRun:
    """A run folder opened for review: its store and its pack."""

    path: Path
    store: Store
    pack: Pack

    @property
    def criteria(self) -> list[str]:
        return [c.id for c in self.pack.rubrics.filter_criteria]

    @property
    def questions(self) -> list[str]:
        """The nine question ids, in page order."""
        return self.criteria + [q for q, _, _ in P_QUESTIONS]

    def close(self) -> None:
        self.store.close()


def open_run(run_dir: str | Path) -> ReviewRun:
    """Open ``run_dir`` (a folder made by ``coherence run``) without creating anything in it."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CoherenceError(f"{path}: no such folder (fix: give a run folder such as runs/<id>)")
    if not (path / "run.db").is_file() or not (path / "config.yaml").is_file():
        raise CoherenceError(f"{path}: not a coherence run (no run.db or config.yaml; fix: give a folder made by "
                             f"`coherence run`, such as runs/<id>)")
    try:
        config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise CoherenceError(f"{path / 'config.yaml'}: not valid YAML ({exc.__class__.__name__}; fix: restore the "
                             f"file `coherence run` wrote)") from None
    pack_ref = config.get("pack") if isinstance(config, dict) else None
    if not pack_ref:
        raise CoherenceError(f"{path / 'config.yaml'}: pack: missing (fix: restore the file `coherence run` wrote)")
    pack = load_pack(pack_ref, check=False)
    store = Store(path / "run.db")
    return ReviewRun(path=path, store=store, pack=pack)


def token_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def add_reviewer(run: ReviewRun, name: str) -> str:
    """Create (or renew) ``name``'s token; returns the token. Only its sha256 is stored."""
    name = name.strip()
    if not name or len(name) > 80 or any(ch in name for ch in "\n\r\t"):
        raise CoherenceError(f"reviewer name {name!r}: use 1-80 characters on one line")
    token = secrets.token_urlsafe(24)
    run.store.add_reviewer(name, token_hash(token))
    return token


def revoke_reviewer(run: ReviewRun, name: str) -> None:
    if not run.store.revoke_reviewer(name):
        known = ", ".join(r["name"] for r in run.store.reviewers()) or "none"
        raise CoherenceError(f"{run.path / 'run.db'}: no reviewer {name!r} (known: {known})")


def reviewer_for(run: ReviewRun, token: str | None) -> str | None:
    """The active reviewer holding ``token``, or None (wrong, revoked or missing)."""
    return run.store.reviewer_by_token(token_hash(token)) if token else None


def thin_answer(pack: Pack, subcategory: str, seed_id: str) -> tuple[int, str] | None:
    """A thin refusal from the pack's exemplars of the sub-category (index, text), chosen by seed id."""
    options = [(i, e.thin) for i, e in enumerate(pack.exemplars.exemplars) if e.subcategory == subcategory]
    if not options:
        return None
    return options[int(hashlib.sha256(seed_id.encode()).hexdigest(), 16) % len(options)]


def page(run: ReviewRun, seed_id: str, *, keep: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Everything one rating page shows, with a fresh random A/B order (or the order of a submitted
    form ``keep``, so that its picks still mean the same side); None for an unknown triplet."""
    t = run.store.triplet(seed_id)
    if t is None:
        return None
    sub = t["subcategory"]
    policy = next((p for p in run.pack.policies.policies if p.subcategory == sub), None)
    questions = [{"id": c.id, "text": c.question, "guide": ""} for c in run.pack.rubrics.filter_criteria]
    questions += [{"id": q, "text": text, "guide": getattr(policy.strategies, attr) if policy else ""}
                  for q, text, attr in P_QUESTIONS]
    sides = {"r_plus": t["chosen"], "r_minus": t["rejected"]}
    pairs = [{"id": "r_plus_vs_r_minus", "title": "Which answer is better?",
              "order": secrets.SystemRandom().sample(["r_plus", "r_minus"], 2)}]
    thin = thin_answer(run.pack, sub, seed_id)
    if thin is not None:
        sides["thin"] = thin[1]
        pairs.append({"id": "thick_vs_thin", "title": "Which answer is better?", "thin_exemplar": thin[0],
                      "order": secrets.SystemRandom().sample(["r_plus", "thin"], 2)})
    for pair in pairs:
        kept = (keep or {}).get(f"order_{pair['id']}", "").split(",")
        if sorted(kept) == sorted(pair["order"]):
            pair["order"] = kept
        pair["texts"] = [sides[side] for side in pair["order"]]
    sub_meta = run.pack.subcategories.get(sub)
    return {"triplet": t, "subcategory": sub, "subcategory_name": sub_meta.name_en if sub_meta else sub,
            "questions": questions, "pairs": pairs}


def parse_rating(run: ReviewRun, form: dict[str, str]) -> tuple[dict[str, str], str, dict[str, Any], list[str]]:
    """(answers, comment, ab, problems) from a submitted form; problems name what is missing or wrong."""
    problems: list[str] = []
    answers = {}
    for q in run.questions:
        value = form.get(f"q_{q}", "")
        if value not in ANSWERS:
            problems.append(f"{q}: choose yes, no or unsure")
        answers[q] = value
    ab: dict[str, Any] = {}
    for pair in PAIRS:
        order = form.get(f"order_{pair}", "")
        if not order:
            continue
        expected = {"r_plus_vs_r_minus": {"r_plus", "r_minus"}, "thick_vs_thin": {"r_plus", "thin"}}[pair]
        sides = order.split(",")
        if len(sides) != 2 or set(sides) != expected:
            problems.append(f"{pair}: the page's A/B order is damaged (reload the page)")
            continue
        pick = form.get(f"pick_{pair}", "")
        if pick not in PICKS:
            problems.append(f"{pair}: choose A, B or same")
            continue
        entry: dict[str, Any] = {"order": sides, "pick": pick,
                                 "preferred": {"A": sides[0], "B": sides[1], "same": "same"}[pick]}
        if pair == "thick_vs_thin" and form.get("thin_exemplar", "").isdigit():
            entry["thin_exemplar"] = int(form["thin_exemplar"])
        ab[pair] = entry
    if "r_plus_vs_r_minus" not in ab and not any(p.startswith("r_plus_vs_r_minus") for p in problems):
        problems.append("r_plus_vs_r_minus: the page's A/B order is missing (reload the page)")
    comment = form.get("comment", "").strip()[:4000]
    return answers, comment, ab, problems
