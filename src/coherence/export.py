"""Export a run's accepted triplets: ``triplets.jsonl`` and a Hugging Face ``datasets`` folder in
TRL's conversational preference format (``prompt``/``chosen``/``rejected`` as message lists) with
provenance columns, plus a dataset card with the funnel and the pack's authorship."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from coherence.packs.loader import Pack
from coherence.packs.schema import Criterion
from coherence.store import Store

FILTER_CRITERIA: tuple[str, ...] = get_args(Criterion.model_fields["id"].annotation)
"""The six filter criteria's ids, fixed by the pack schema (rubrics.yaml names them in this set)."""

PROVENANCE_COLUMNS = ("pack", "seed_id", "domain", "subcategory", "template", "strategy", "attempt",
                      "attacker", "target", "generator", "generator_model")


def reviewer_rejects(answers: dict[str, str], criteria: list[str]) -> bool:
    """A reviewer rejects a triplet when they answer "no" to any of the six filter criteria (the judges'
    unanimous rule, applied to one person); "unsure" does not reject."""
    return any(answers.get(c) == "no" for c in criteria)


def rejected_by_reviewers(store: Store) -> set[str]:
    """Seed ids of the triplets that at least half of the reviewers who rated them reject (a tie
    excludes: this is safety data). Each reviewer's latest rating counts (``coherence review``)."""
    criteria = list(FILTER_CRITERIA)
    votes: dict[str, list[bool]] = {}
    for r in store.latest_reviews():
        votes.setdefault(r["seed_id"], []).append(reviewer_rejects(r["answers"], criteria))
    return {seed for seed, v in votes.items() if 2 * sum(v) >= len(v)}


def _first(scores: dict[str, Any]) -> Any:
    return next(iter(scores.values()), None) if scores else None


def triplet_row(t: dict[str, Any]) -> dict[str, Any]:
    """One accepted triplet as a TRL conversational preference row with provenance columns."""
    p = t["provenance"]
    scores = p["scores"]
    return {
        "prompt": [{"role": "user", "content": t["prompt"]}],
        "chosen": [{"role": "assistant", "content": t["chosen"]}],
        "rejected": [{"role": "assistant", "content": t["rejected"]}],
        **{c: p[c] for c in PROVENANCE_COLUMNS},
        "slot_fill": json.dumps(p["slot_fill"], ensure_ascii=False),
        "query_harm_score": _first(scores["query_harm"]),
        "rejected_harm_score": _first(scores["rejected_harm"]),
        "chosen_quality_score": _first(scores["chosen_quality"]),
        "judge_scores": json.dumps(scores, ensure_ascii=False),
        "offline_roles": p["offline_roles"],
    }


def _features() -> Any:
    from datasets import Features, List, Value

    msg = List({"role": Value("string"), "content": Value("string")})
    cols: dict[str, Any] = {"prompt": msg, "chosen": msg, "rejected": msg}
    cols.update({c: Value("int64") if c == "attempt" else Value("string") for c in PROVENANCE_COLUMNS})
    cols.update({"slot_fill": Value("string"), "query_harm_score": Value("int64"),
                 "rejected_harm_score": Value("int64"), "chosen_quality_score": Value("int64"),
                 "judge_scores": Value("string"), "offline_roles": List(Value("string"))})
    return Features(cols)


def _rows(db_path: str, stamp: str, excluded: list[str]) -> Iterator[dict[str, Any]]:
    store = Store(db_path)
    skip = set(excluded)
    try:
        for t in store.triplets("accepted"):
            if t["seed_id"] not in skip:
                yield triplet_row(t)
    finally:
        store.close()


def dataset_card(store: Store, pack: Pack, n: int, excluded: int = 0) -> str:
    meta = pack.meta
    status = store.group_count("seeds", "status")
    per_domain = store.group_count("triplets", "domain", "status = 'accepted'")
    offline = sorted({r for t in store.triplets("accepted") for r in t["provenance"]["offline_roles"]})
    lines = [
        f"# {meta.title}: DPO triplets ({pack.ref})", "",
        f"{n} accepted (prompt, chosen, rejected) triplets in TRL's conversational preference format, made by "
        "`coherence` (stages: seed, attack mining, policy-constrained response, unanimous judge filter).", "",
    ]
    if excluded:
        lines += [f"{excluded} accepted triplets were left out because human reviewers rejected them "
                  "(`--exclude-rejected`: at least half of a triplet's reviewers answered no to a filter "
                  "criterion).", ""]
    if offline:
        lines += ["**Offline run.** These roles were deterministic pack-driven stand-ins or heuristic judges, "
                  f"not language models: {', '.join(offline)}. The chosen responses are template compositions of "
                  "the pack's policy and the judges are keyword heuristics; use this data to test the pipeline, "
                  "not as frontier-quality preference data.", ""]
    lines += ["## Scope", "", meta.scope.statement, "", "Covers:"] + [f"- {c}" for c in meta.scope.covers]
    lines += ["", "Does not cover:"] + [f"- {c}" for c in meta.scope.excludes]
    lines += ["", "## Who wrote the policy", ""]
    lines += [f"- {a.name}" + (f" ({a.role})" if a.role else "") + (f", {a.affiliation}" if a.affiliation else "")
              for a in meta.authorship.authors]
    lines += ["", f"Method: {meta.authorship.method}", "", f"Review: {meta.authorship.review}", ""]
    if meta.sources:
        lines += ["Sources:"] + [f"- {s.title}" + (f" <{s.url}>" if s.url else "") for s in meta.sources] + [""]
    lines += ["## Funnel", "", "| stage | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(status.items())]
    lines += ["", "## Accepted per domain", "", "| domain | accepted |", "|---|---|"]
    lines += [f"| {d.id} | {per_domain.get(d.id, 0)} |" for d in pack.taxonomy.domains]
    lines += ["", "Every row carries its provenance: pack@version, domain, sub-category, template, slot fill, "
              "attack strategy and attempt, target, generator and every judge's score (`judge_scores`).", ""]
    return "\n".join(lines)


def export_run(store: Store, pack: Pack, run_dir: Path, *, exclude_rejected: bool = False) -> dict[str, Any]:
    """Write ``triplets.jsonl``, ``dataset/`` (``datasets.load_from_disk``) and the dataset card.

    Args:
        store: the run's store.
        pack: its pack.
        run_dir: where to write.
        exclude_rejected: leave out accepted triplets that human reviewers rejected
            (:func:`rejected_by_reviewers`).

    Returns:
        Paths, ``rows`` written and ``excluded_by_reviewers``.
    """
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()
    jsonl = run_dir / "triplets.jsonl"
    tmp = jsonl.with_suffix(".jsonl.tmp")
    n = 0
    excluded = sorted(rejected_by_reviewers(store)) if exclude_rejected else []
    skip = set(excluded)
    dropped = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for t in store.triplets("accepted"):
            if t["seed_id"] in skip:
                dropped += 1
                continue
            fh.write(json.dumps(triplet_row(t), ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(jsonl)
    out = run_dir / "dataset"
    cache = run_dir / ".datasets-cache"
    stamp = f"{n}:{store.count('triplets')}:{store.count('calls')}:{','.join(excluded)}"
    if n:
        ds = Dataset.from_generator(_rows, gen_kwargs={"db_path": str(store.path), "stamp": stamp, "excluded": excluded},
                                    features=_features(), cache_dir=str(cache))
    else:
        features = _features()
        ds = Dataset.from_dict({k: [] for k in features}, features=features)
    staging = run_dir / "dataset.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    ds.save_to_disk(str(staging))
    card = dataset_card(store, pack, n, excluded=dropped)
    (staging / "README.md").write_text(card, encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    shutil.rmtree(cache, ignore_errors=True)
    return {"triplets_jsonl": str(jsonl), "dataset": str(out), "rows": n, "excluded_by_reviewers": dropped}


def export_folder(run_dir: Path, *, exclude_rejected: bool = False) -> dict[str, Any]:
    """Export an existing run folder again (no model call), e.g. after human review.

    Args:
        run_dir: a folder made by ``coherence run``.
        exclude_rejected: leave out the triplets human reviewers rejected.
    """
    import yaml

    from coherence.errors import CoherenceError
    from coherence.packs.loader import load_pack

    if not (run_dir / "run.db").is_file() or not (run_dir / "config.yaml").is_file():
        raise CoherenceError(f"{run_dir}: not a coherence run (no run.db or config.yaml; fix: give a folder made "
                             f"by `coherence run`, such as runs/<id>)")
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    pack = load_pack(config.get("pack", "ko-KR"), check=False)
    store = Store(run_dir / "run.db")
    try:
        return export_run(store, pack, run_dir, exclude_rejected=exclude_rejected)
    finally:
        store.close()
