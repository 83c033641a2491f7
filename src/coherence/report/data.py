"""What the report shows, gathered from a run folder (``run.db`` through the Store's report queries,
``summary.json``, ``config.yaml``, ``train/<name>/``) or an eval folder (``results.json``).

Plain dicts and lists, ready for the template; the arithmetic (funnel stages, win shares, tie-breaks,
agreement, percentiles) lives here so that it can be tested without rendering.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from coherence.errors import CoherenceError
from coherence.packs.loader import load_pack
from coherence.judges.agreement import filter_agreement
from coherence.store import Store

#: The funnel's stages: (label, test on a seed's (stage, status)).
FUNNEL = (
    ("seeds", lambda stage, status: True),
    ("kept (not near-duplicate)", lambda stage, status: status not in ("duplicate", "empty")),
    ("attacked (stage B)", lambda stage, status: stage != "seed"),
    ("jailbroken", lambda stage, status: status not in ("active", "duplicate", "empty", "no_jailbreak")),
    ("query judged harmful", lambda stage, status: stage == "filter" or status in ("no_candidate", "responded")),
    ("r+ chosen (stage C)", lambda stage, status: stage == "filter"),
    ("passed the filter (stage D)", lambda stage, status: status in ("accepted", "over_quota")),
    ("accepted (within quota)", lambda stage, status: status == "accepted"),
)

SAMPLE_PER_STATUS = 40
"""Triplets of each status (accepted, rejected, over quota) shown in the browsable sample."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CoherenceError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}) "
                             f"(fix: re-create it with the command that wrote it)") from None


def funnel_rows(outcomes: list[dict[str, Any]], domains: list[str]) -> list[dict[str, Any]]:
    """One row per funnel stage: its count per domain and in all."""
    rows = []
    for label, test in FUNNEL:
        per = {d: 0 for d in domains}
        for o in outcomes:
            if test(o["stage"], o["status"]):
                per[o["domain"]] = per.get(o["domain"], 0) + o["n"]
        rows.append({"stage": label, "per_domain": per, "total": sum(per.values())})
    return rows


def subcategory_rows(outcomes: list[dict[str, Any]], pack: Any, quotas: dict[str, int]) -> list[dict[str, Any]]:
    """Accepted triplets per sub-category against its even share of the domain's quota."""
    accepted = Counter()
    for o in outcomes:
        if o["status"] == "accepted":
            accepted[o["subcategory"]] += o["n"]
    rows = []
    for d in pack.taxonomy.domains:
        subs = d.subcategories
        for s in subs:
            share = quotas.get(d.id, 0) / len(subs) if subs else 0
            rows.append({"domain": d.id, "subcategory": s.id, "name": s.name, "accepted": accepted.get(s.id, 0),
                         "share": round(share, 1)})
    return rows


def attack_rows(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """Jailbreak rate per strategy and per attempt number."""
    strategies = sorted({a["strategy"] for a in attempts})
    numbers = sorted({a["attempt"] for a in attempts})
    cell = {(a["strategy"], a["attempt"]): a for a in attempts}
    per_strategy = []
    for s in strategies:
        n = sum(a["n"] for a in attempts if a["strategy"] == s)
        jb = sum(a["jailbroken"] or 0 for a in attempts if a["strategy"] == s)
        per_strategy.append({"strategy": s, "n": n, "jailbroken": jb, "rate": jb / n if n else None})
    grid = [{"strategy": s, "cells": [{"attempt": k, "n": cell[(s, k)]["n"] if (s, k) in cell else 0,
                                       "jailbroken": (cell[(s, k)]["jailbroken"] or 0) if (s, k) in cell else 0}
                                      for k in numbers]} for s in strategies]
    return {"strategies": strategies, "attempts": numbers, "per_strategy": per_strategy, "grid": grid}


def rater(row: dict[str, Any]) -> str:
    """A judge's or generator's label: its role slot and model (``filter_judges[1] · offline:judge-morph``)."""
    slot, model = row.get("slot") or "", row.get("judge") or row.get("model") or ""
    return f"{slot} · {model}" if slot and model and slot != model else (slot or model)


def generator_rows(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """Win shares of the stage-C generator slots, and how many wins came from a tie-break (another
    candidate had the same best score, so the least-used generator won)."""
    by_seed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in candidates:
        by_seed[c["seed_id"]].append(c)
    labels = {c["slot"]: rater(c) for c in candidates}
    wins, ties = Counter(), Counter()
    tied_seeds = 0
    for rows in by_seed.values():
        chosen = next((c for c in rows if c["chosen"]), None)
        if chosen is None:
            continue
        wins[chosen["slot"]] += 1
        if sum(1 for c in rows if c["score"] == chosen["score"]) > 1:
            ties[chosen["slot"]] += 1
            tied_seeds += 1
    total = sum(wins.values())
    rows = []
    for slot in sorted(labels):
        mine = [c for c in candidates if c["slot"] == slot]
        scores = [c["score"] for c in mine if c["score"] is not None]
        rows.append({"generator": labels[slot], "slot": slot, "wins": wins[slot],
                     "share": wins[slot] / total if total else None, "tie_wins": ties[slot],
                     "mean_score": statistics.fmean(scores) if scores else None, "candidates": len(mine),
                     "refusals": sum(1 for c in mine if c.get("refusal"))})
    return {"total": total, "tied": tied_seeds, "rows": rows}


def verdict_distributions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task and judge slot: counts per score (filter: pass / fail / unscored)."""
    out: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for r in rows:
        if r["task"] == "filter":
            key = "unscored" if r["passed"] is None else ("pass" if r["passed"] else "fail")
        else:
            key = "unscored" if r["score"] is None else str(r["score"])
        out[(r["task"], rater(r))][key] += r["n"]
    return [{"task": t, "judge": j, "counts": dict(sorted(c.items()))} for (t, j), c in sorted(out.items())]


def call_rows(stats: list[dict[str, Any]], quantiles: dict[tuple[str, str], list[float]],
              errors: list[dict[str, Any]], refusals: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Calls, tokens, cost and latency (mean, p50, p95) per role slot and model, with the errors and
    provider refusals of the slot."""
    errs: dict[str, dict[str, int]] = defaultdict(dict)
    for e in errors:
        errs[e["role"]][e["kind"]] = e["n"]
    rows = []
    for s in stats:
        p50, p95 = quantiles.get((s["role"], s["model"]), [None, None])
        rows.append({**s, "latency_mean": s["latency_sum"] / s["calls"] if s["calls"] else None,
                     "p50": p50, "p95": p95, "errors": errs.get(s["role"], {}),
                     "refusals": refusals.get(s["role"], {})})
    return rows


#: What a seed's final status means, for the "where seeds stopped" table.
STATUS_MEANING = {
    "duplicate": "a near-duplicate of an earlier seed (stage A)", "empty": "the slot filler gave nothing (stage A)",
    "active": "not attacked: the domain quotas were met (or the budget ran out) first",
    "no_jailbreak": "the target resisted every attempt (stage B)",
    "jailbroken": "jailbroken, stage C not done yet (the budget ran out)",
    "query_rejected": "the query judge found the attacked query not harmful enough (stage C)",
    "no_candidate": "every r+ candidate was empty or unscored (stage C)",
    "responded": "r+ chosen, stage D not done yet (the budget ran out)",
    "rejected": "a filter judge voted no (stage D, unanimous rule)",
    "over_quota": "passed the filter, but its domain already had its quota",
}


REASONS_PER_STATUS = 5
"""Distinct reasons shown per (stage, status); the rest are summed into one row."""


def _top_reasons(reasons: list[dict[str, Any]], *, per_status: int) -> list[dict[str, Any]]:
    """The most frequent reasons of each (stage, status), the rest summed; statuses by seeds, descending."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in reasons:
        groups[(r["stage"], r["status"])].append(r)
    out = []
    for (stage, status), rows in sorted(groups.items(), key=lambda kv: -sum(r["n"] for r in kv[1])):
        rows = sorted(rows, key=lambda r: -r["n"])
        meaning = STATUS_MEANING.get(status, "")
        out += [{**r, "meaning": meaning} for r in rows[:per_status]]
        rest = rows[per_status:]
        if rest:
            out.append({"stage": stage, "status": status, "meaning": meaning, "n": sum(r["n"] for r in rest),
                        "reason": f"({len(rest)} other reasons)"})
    return out


def stop_reason_rows(reasons: list[dict[str, Any]], votes: list[dict[str, Any]]) -> dict[str, Any]:
    """Why seeds stopped (per stage and status) and which filter criteria each judge failed."""
    criteria: dict[str, Counter] = defaultdict(Counter)
    for v in votes:
        if v["passed"] is None:
            criteria[rater(v)]["(unscored)"] += 1
            continue
        for name, ok in (v["detail"].get("criteria") or {}).items():
            if not ok:
                criteria[rater(v)][name] += 1
    names = sorted({c for per in criteria.values() for c in per})
    reasons = _top_reasons(reasons, per_status=REASONS_PER_STATUS)
    return {"reasons": reasons, "criteria": names,
            "failures": [{"judge": j, "counts": [per.get(c, 0) for c in names]} for j, per in sorted(criteria.items())]}


def training_jobs(run_dir: Path) -> list[dict[str, Any]]:
    """Every ``train/<name>/`` job of a run: its metrics over steps and its result."""
    jobs = []
    for job in sorted((run_dir / "train").glob("*/")):
        metrics_file, log_file = job / "metrics.json", job / "metrics.jsonl"
        if metrics_file.is_file():
            metrics = _read_json(metrics_file)
        elif log_file.is_file():  # a job still running or killed: the log it appends to
            metrics = _metrics_from_log(log_file)
        else:
            continue
        result = _read_json(job / "result.json") if (job / "result.json").is_file() else None
        record = _read_json(job / "train_config.json") if (job / "train_config.json").is_file() else {}
        jobs.append({"name": job.name, "path": str(job), "metrics": metrics, "result": result,
                     "base": (record.get("base") or {}).get("spec"), "finished": result is not None})
    return jobs


def _metrics_from_log(path: Path) -> dict[str, list[dict[str, Any]]]:
    train: dict[int, dict[str, Any]] = {}
    evals: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a killed job may be cut
        if any(k.startswith("eval_") for k in row):
            evals[int(row["step"])] = {"step": row["step"], **{k[5:]: v for k, v in row.items() if k.startswith("eval_")}}
        elif "loss" in row:
            train[int(row["step"])] = row
    return {"train": [train[s] for s in sorted(train)], "eval": [evals[s] for s in sorted(evals)]}


def load_eval(folder: Path) -> dict[str, Any]:
    """An eval folder's ``results.json`` (the evaluation contract), checked and arranged for tables."""
    path = folder / "results.json"
    data = _read_json(path)
    if not isinstance(data, dict):
        raise CoherenceError(f"{path}: expected a JSON object (fix: re-run `coherence eval`)")
    for key in ("eval_id", "models", "metrics"):
        if key not in data:
            raise CoherenceError(f"{path}: missing field {key!r} (fix: re-run `coherence eval` with this "
                                 f"version of coherence)")
    for i, m in enumerate(data["metrics"]):
        for key in ("suite", "metric", "group", "model", "value"):
            if key not in m:
                raise CoherenceError(f"{path}: metrics[{i}] has no {key!r} (fix: re-run `coherence eval`)")
    labels = [m["label"] for m in data["models"]]
    table: dict[tuple[str, str, str], dict[str, Any]] = {}
    for m in data["metrics"]:
        row = table.setdefault((m["suite"], m["metric"], m["group"]),
                               {"suite": m["suite"], "metric": m["metric"], "group": m["group"], "cells": {}})
        row["cells"][m["model"]] = {"value": m["value"], "n": m.get("n"), "ci": m.get("ci")}
    suites: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (suite, _, _), row in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != "all", kv[0][2])):
        suites[suite].append(row)
    return {**data, "folder": str(folder), "labels": labels, "suites": dict(suites),
            "comparisons": data.get("comparisons") or []}


def find_evals(run_dir: Path, extra: list[Path]) -> list[dict[str, Any]]:
    """The run's ``evals/<id>/`` folders and any others given."""
    folders = sorted(p.parent for p in (run_dir / "evals").glob("*/results.json"))
    return [load_eval(f) for f in [*folders, *(f for f in extra if f not in folders)]]


def _pack_info(store: Store, config: dict[str, Any]) -> dict[str, Any]:
    ref, digest = store.get_meta("pack"), store.get_meta("pack_digest")
    info: dict[str, Any] = {"ref": ref, "digest": digest, "loaded": None, "warning": ""}
    name = config.get("pack") or (ref.split("@")[0] if ref else None)
    if not name:
        info["warning"] = "this run records no pack yet (no config.yaml, and stage A has not started)"
        return info
    try:
        pack = load_pack(name)
    except CoherenceError as exc:
        info["warning"] = f"the pack could not be loaded to show its scope and authors: {exc}"
        return info
    if digest and pack.digest != digest:
        info["warning"] = (f"the pack's files changed since this run (run: {digest}, now: {pack.digest}); "
                           f"scope and authors below are today's")
    info["loaded"] = pack
    return info


def gather_run(run_dir: Path, *, evals: list[Path] | None = None) -> dict[str, Any]:
    """Everything the run report shows. Raises CoherenceError if ``run_dir`` is not a run."""
    db = run_dir / "run.db"
    if not db.is_file():
        raise CoherenceError(f"{run_dir}: not a run folder (no run.db) (fix: give a runs/<id>/ folder that "
                             f"`coherence run` created, or an eval folder with results.json)")
    config_file = run_dir / "config.yaml"
    config = (yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}) if config_file.is_file() else {}
    summary = _read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    store = Store(db)
    try:
        pack = _pack_info(store, config)
        outcomes = store.report_seed_outcomes()
        votes = store.report_filter_votes()
        loaded = pack["loaded"]
        domains = [d.id for d in loaded.taxonomy.domains] if loaded else sorted({o["domain"] for o in outcomes})
        quotas = summary.get("quota_per_domain") or _even_quotas(config, domains)
        data = {
            "kind": "run",
            "run_id": run_dir.name, "run_dir": str(run_dir), "status": summary.get("status", "unknown (no summary.json)"),
            "config": config, "summary": summary, "pack": pack, "domains": domains, "quotas": quotas,
            "offline_roles": summary.get("offline_roles") or _offline_roles(config),
            "funnel": funnel_rows(outcomes, domains),
            "subcategories": subcategory_rows(outcomes, loaded, quotas) if loaded else [],
            "attacks": attack_rows(store.report_attempt_outcomes()),
            "generators": generator_rows(store.report_candidate_scores()),
            "verdicts": verdict_distributions(store.report_verdict_scores()),
            "agreement": filter_agreement(votes),
            "stops": stop_reason_rows(store.report_stop_reasons(), votes),
            "calls": call_rows(store.report_call_stats(), store.report_latency_quantiles((0.5, 0.95)),
                               store.report_call_errors(), store.refusal_counts()),
            "sample": store.report_triplet_sample(per_status=SAMPLE_PER_STATUS),
        }
    finally:
        store.close()
    data["training"] = training_jobs(run_dir)
    data["evals"] = find_evals(run_dir, evals or [])
    return data


def _even_quotas(config: dict[str, Any], domains: list[str]) -> dict[str, int]:
    target = int((config.get("pipeline") or {}).get("target_count") or 0)
    base, extra = divmod(target, len(domains)) if domains else (0, 0)
    return {d: base + (i < extra) for i, d in enumerate(domains)}


def _offline_roles(config: dict[str, Any]) -> list[str]:
    """The offline models of a run's config (as summary.json names them), for runs without a summary."""
    out = set()
    for spec in (config.get("roles") or {}).values():
        for one in spec if isinstance(spec, list) else [spec]:
            if isinstance(one, dict) and str(one.get("model", "")).startswith("offline:"):
                out.add(one["model"])
    return sorted(out)
