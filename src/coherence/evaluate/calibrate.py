"""``coherence judge calibrate``: how far a judge agrees with human labels.

Rows (JSONL): ``text`` (or ``query``, with an optional ``response``), ``label`` (``harmful``/``benign``,
1/0, true/false) and an optional ``subcategory`` of the pack. A row with a response is judged on response
harm (harmful = score >= the pipeline's ``jailbreak_threshold``), one without on query harm (harmful = score
>= ``min_query_harm``), the thresholds of the run config. A row without a sub-category is scored under every
sub-category of the pack and the highest score counts. LLM judges go through the call choke point with a
store (cached: a re-run makes no call); an unparseable verdict is unscored, counted, and left out of the
agreement figures.

API: ``calibrate(judge_spec, data, ...) -> dict``; ``agreement(labels, predictions) -> dict``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coherence.config import ModelSpec, RunConfig, load_config
from coherence.errors import CoherenceError
from coherence.judges import Judge, Verdict, make_judge
from coherence.models import ModelPool
from coherence.packs.loader import Pack, load_pack
from coherence.store import Store

POSITIVE = {"harmful", "harm", "unsafe", "1", "true", "yes", "toxic", "hate", "offensive"}
NEGATIVE = {"benign", "harmless", "safe", "0", "false", "no", "none", "clean"}


@dataclass(frozen=True)
class LabelledRow:
    """One human-labelled row."""

    id: str
    query: str
    response: str | None
    harmful: bool
    subcategory: str | None

    @property
    def task(self) -> str:
        return "response_harm" if self.response is not None else "query_harm"


def _label(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in POSITIVE:
        return True
    if text in NEGATIVE:
        return False
    raise CoherenceError(f"{where}: label {value!r} is neither harmful nor benign (fix: harmful/benign or 1/0)")


def load_rows(path: str | Path, pack: Pack) -> list[LabelledRow]:
    """Read a labelled JSONL file (one object per line; blank lines skipped).

    Raises:
        CoherenceError: The file is missing, a line is not JSON, a row has no text or label, or names a
            sub-category the pack does not have.
    """
    file = Path(path)
    if not file.is_file():
        raise CoherenceError(f"{file}: no such labelled file (fix: JSONL rows with text (or query and response), "
                             f"label harmful/benign and an optional subcategory)")
    rows: list[LabelledRow] = []
    for n, line in enumerate(file.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CoherenceError(f"{where}: invalid JSON ({exc.msg}) (fix: one JSON object per line)") from None
        if not isinstance(obj, dict):
            raise CoherenceError(f"{where}: not an object (fix: one JSON object per line)")
        query = obj.get("query") if obj.get("query") not in (None, "") else obj.get("text")
        if not isinstance(query, str) or not query.strip():
            raise CoherenceError(f"{where}: no text (fix: give 'text', or 'query' and 'response')")
        if "label" not in obj:
            raise CoherenceError(f"{where}: no label (fix: \"label\": \"harmful\" or \"benign\" (or 1/0))")
        response = obj.get("response")
        if response is not None and not isinstance(response, str):
            raise CoherenceError(f"{where}: response is not text (fix: a string, or leave it out)")
        sub = obj.get("subcategory") or None
        if sub is not None and sub not in pack.subcategories:
            raise CoherenceError(f"{where}: subcategory {sub!r} is not in {pack.path}/taxonomy.yaml (fix: one of "
                                 f"{', '.join(pack.subcategories)}, or leave it out to score under all)")
        rows.append(LabelledRow(id=str(obj.get("id", n)), query=query, response=response,
                                harmful=_label(obj["label"], where), subcategory=sub))
    if not rows:
        raise CoherenceError(f"{file}: no rows (fix: one labelled object per line)")
    return rows


def agreement(labels: list[bool], predictions: list[bool]) -> dict[str, Any]:
    """Accuracy, Cohen's kappa, precision, recall, F1 (harmful is the positive class) and the confusion
    matrix. A figure that is undefined (kappa when both raters use one class only, F1 with no positive
    anywhere) is None.
    """
    pairs = list(zip(labels, predictions, strict=True))
    n = len(pairs)
    tp = sum(t and p for t, p in pairs)
    tn = sum(not t and not p for t, p in pairs)
    fp = sum(not t and p for t, p in pairs)
    fn = sum(t and not p for t, p in pairs)
    if n == 0:
        return {"n": 0, "accuracy": None, "kappa": None, "precision": None, "recall": None, "f1": None,
                "confusion": {"tp": 0, "fp": 0, "fn": 0, "tn": 0}}
    po = (tp + tn) / n
    pe = ((tp + fn) / n) * ((tp + fp) / n) + ((tn + fp) / n) * ((tn + fn) / n)
    return {
        "n": n, "accuracy": po, "kappa": (po - pe) / (1 - pe) if pe < 1 else None,
        "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "human_harmful": tp + fn, "judge_harmful": tp + fp,
    }


async def _judge_row(judge: Judge, row: LabelledRow, subs: list[str]) -> tuple[Verdict | None, str | None, int]:
    """The row's verdict under its sub-category, or the highest over ``subs``; None if all unscored."""
    if row.response is not None:
        verdicts = await asyncio.gather(*(judge.response_harm_async(s, row.query, row.response) for s in subs))
    else:
        verdicts = await asyncio.gather(*(judge.query_harm_async(s, row.query) for s in subs))
    scored = [(v, s) for v, s in zip(verdicts, subs) if v.score is not None]
    if not scored:
        return (verdicts[0] if verdicts else None), None, len(verdicts)
    best = max(scored, key=lambda vs: vs[0].score or 0)  # the first sub-category wins a tie
    return best[0], best[1], len(verdicts)


async def calibrate_async(spec: ModelSpec, rows: list[LabelledRow], *, pack: Pack, cfg: RunConfig,
                          store_path: Path) -> dict[str, Any]:
    """Judge every row and compare with the labels (see :func:`calibrate`)."""
    thresholds = {"response_harm": cfg.pipeline.jailbreak_threshold, "query_harm": cfg.pipeline.min_query_harm}
    store_path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(store_path)
    pool = ModelPool(store, pack)
    try:
        judge = make_judge(spec, pool=pool, pack=pack, role="judge_calibrate")
        all_subs = list(pack.subcategories)
        results = await asyncio.gather(*(_judge_row(judge, r, [r.subcategory] if r.subcategory else all_subs)
                                         for r in rows))
    finally:
        await pool.aclose()
        store.close()
    out_rows, groups = [], {"all": ([], [])}
    for row, (verdict, sub, _n) in zip(rows, results):
        score = verdict.score if verdict is not None and sub is not None else None
        pred = None if score is None else score >= thresholds[row.task]
        out_rows.append({"id": row.id, "task": row.task, "label": "harmful" if row.harmful else "benign",
                         "score": score, "predicted": None if pred is None else ("harmful" if pred else "benign"),
                         "subcategory": sub if row.subcategory is None else row.subcategory,
                         "subcategory_given": row.subcategory is not None,
                         "reason": verdict.reason if verdict is not None else "unscored"})
        if pred is None:
            continue
        for key in ("all", row.task, *( [f"subcategory:{row.subcategory}"] if row.subcategory else [])):
            labels, preds = groups.setdefault(key, ([], []))
            labels.append(row.harmful)
            preds.append(pred)
    metrics = {k: agreement(*v) for k, v in groups.items()}
    return {
        "judge": spec.model, "offline_judge": spec.heuristic_judge, "pack": pack.ref,
        "thresholds": thresholds, "n_rows": len(rows),
        "n_unscored": sum(r["score"] is None for r in out_rows),
        **metrics["all"],
        "by_task": {k: v for k, v in metrics.items() if k in ("query_harm", "response_harm")},
        "by_subcategory": {k.split(":", 1)[1]: v for k, v in metrics.items() if k.startswith("subcategory:")},
        "calls": {"made": pool.stats.made, "cached": pool.stats.cached},
        "rows": out_rows,
    }


def calibrate(judge_spec: str | ModelSpec, data: str | Path, *, config: str | Path | None = None,
              pack: str | None = None, store_path: str | Path = Path("runs") / "_calibrate" / "calls.db",
              api_base: str | None = None, api_key_env: str | None = None) -> dict[str, Any]:
    """Measure a judge against human labels.

    Args:
        judge_spec: ``offline:judge``, ``offline:judge-morph``, ``offline:judge-strict`` or any LLM spec.
        data: The labelled JSONL file.
        config: Run config YAML whose pack and thresholds apply (default: the defaults).
        pack: Pack name or folder instead of the config's.
        store_path: SQLite file caching the judge's calls.
        api_base: OpenAI-compatible server of an LLM judge.
        api_key_env: Variable holding its key.

    Returns:
        n (scored rows), accuracy, kappa, precision, recall, f1, confusion (tp/fp/fn/tn), the same ``by_task``
        and ``by_subcategory`` (rows that name one), ``n_unscored``, ``thresholds``, ``calls`` and per-row
        ``rows``.
    """
    cfg = load_config(config, {"pack": pack} if pack else None)
    the_pack = load_pack(cfg.pack)
    spec = judge_spec if isinstance(judge_spec, ModelSpec) else ModelSpec(
        model=judge_spec, api_base=api_base, api_key_env=api_key_env, params={"temperature": 0})
    from coherence.judges.heuristic import VARIANTS

    if spec.model.startswith("offline:") and spec.model.split(":", 1)[1] not in VARIANTS:
        raise CoherenceError(f"--judge {spec.model}: not a judge (fix: offline:judge, offline:judge-morph, "
                             f"offline:judge-strict, or an LLM spec such as openai/gpt-4.1)")
    rows = load_rows(data, the_pack)
    result = asyncio.run(calibrate_async(spec, rows, pack=the_pack, cfg=cfg, store_path=Path(store_path)))
    result["data"] = str(data)
    return result
