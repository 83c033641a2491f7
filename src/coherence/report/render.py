"""Render the gathered data into one self-contained HTML file (Jinja2, autoescaped; charts inline SVG)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from coherence import __version__
from coherence.errors import CoherenceError
from coherence.report import charts
from coherence.report.data import SAMPLE_PER_STATUS, gather_run, load_eval

STATUS_ORDER = ("accepted", "rejected", "over_quota")


def _env() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("coherence.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v, d=0: "–" if v is None else f"{100 * v:.{d}f}%"
    env.filters["num"] = lambda v, d=2: "–" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v:,.{d}f}")
    env.filters["ci"] = lambda ci, d=3: "" if not ci else f"[{ci[0]:.{d}f}, {ci[1]:.{d}f}]"
    env.filters["cell"] = lambda v: "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else v)
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=1, ensure_ascii=False, default=str)
    return env


def run_charts(data: dict[str, Any]) -> dict[str, str]:
    """Every chart of a run report, as inline SVG strings keyed by name."""
    out: dict[str, str] = {}
    domains = data["domains"]
    f = data["funnel"]
    out["funnel"] = charts.grouped_bars(
        [r["stage"] for r in f], {d: [r["per_domain"].get(d, 0) for r in f] for d in domains},
        name="funnel", title="seeds reaching each stage, per domain", ylabel="seeds", horizontal=True)
    subs = data["subcategories"]
    if subs:
        out["quota"] = charts.grouped_bars(
            [s["subcategory"] for s in subs], {"accepted": [s["accepted"] for s in subs],
                                               "even share of the domain quota": [s["share"] for s in subs]},
            name="quota", title="accepted triplets per sub-category", ylabel="triplets", horizontal=True)
    a = data["attacks"]
    if a["grid"]:
        out["attacks"] = charts.heatmap(
            a["strategies"], [str(k) for k in a["attempts"]],
            [[c["jailbroken"] / c["n"] if c["n"] else None for c in row["cells"]] for row in a["grid"]],
            [[f"{c['jailbroken']}/{c['n']}" if c["n"] else "" for c in row["cells"]] for row in a["grid"]],
            name="attacks", title="jailbroken / attempts, per strategy and attempt number", xlabel="attempt")
    g = data["generators"]["rows"]
    if g:
        out["generators"] = charts.grouped_bars(
            [r["generator"] for r in g], {"won outright": [r["wins"] - r["tie_wins"] for r in g],
                                          "won on a tie-break": [r["tie_wins"] for r in g]},
            name="generators", title="stage C wins per generator", ylabel="seeds", horizontal=True)
    for task in dict.fromkeys(v["task"] for v in data["verdicts"]):
        rows = [v for v in data["verdicts"] if v["task"] == task]
        keys = sorted({k for v in rows for k in v["counts"]}, key=lambda k: (not k.isdigit(), k))
        title = task.replace("_", " ") + (f" ({rows[0]['judge']})" if len(rows) == 1 else "")
        out[f"verdicts_{task}"] = charts.grouped_bars(
            keys, {v["judge"]: [v["counts"].get(k, 0) for k in keys] for v in rows},
            name=f"verdicts_{task}", title=title, ylabel="verdicts", height=2.6)
    st = data["stops"]
    if st["failures"]:
        out["criteria"] = charts.grouped_bars(
            st["criteria"], {r["judge"]: r["counts"] for r in st["failures"]}, name="criteria",
            title="filter criteria failed, per judge", ylabel="votes failing it", horizontal=True)
    if data["calls"]:
        out["latency"] = charts.grouped_bars(
            [f"{c['role']} · {c['model']}" for c in data["calls"]],
            {"mean": [c["latency_mean"] for c in data["calls"]], "p95": [c["p95"] for c in data["calls"]]},
            name="latency", title="latency per call", ylabel="seconds", horizontal=True)
    for i, job in enumerate(data["training"]):
        out[f"train_{i}"] = train_chart(job, name=f"train_{i}")
    for i, ev in enumerate(data["evals"]):
        out.update(eval_charts(ev, prefix=f"eval_{i}"))
    return out


def train_chart(job: dict[str, Any], *, name: str) -> str:
    m = job["metrics"]
    panels = []
    for label, keys in (("loss", ["loss"]), ("rewards", ["rewards/chosen", "rewards/rejected"]),
                        ("reward accuracy", ["rewards/accuracies"]), ("reward margin", ["rewards/margins"])):
        series = {}
        for part, prefix in (("train", "train"), ("eval", "held-out")):
            for key in keys:
                pts = [(r["step"], r[key]) for r in m.get(part, []) if r.get(key) is not None]
                if pts:
                    series[f"{prefix} {key}"] = pts
        panels.append((label, series))
    return charts.lines(panels, name=name, title=f"training job {job['name']}")


def eval_charts(ev: dict[str, Any], *, prefix: str) -> dict[str, str]:
    """One interval chart per suite: every metric on the group 'all', per model."""
    out = {}
    for suite, rows in ev["suites"].items():
        labels, values, cis = [], [], []
        for row in rows:
            if row["group"] != "all":
                continue
            for model in ev["labels"]:
                cell = row["cells"].get(model)
                if cell is not None:
                    labels.append(f"{row['metric']} · {model}")
                    values.append(cell["value"])
                    cis.append(cell["ci"])
        if labels:
            out[f"{prefix}_{suite}"] = charts.intervals(labels, values, cis, name=f"{prefix}_{suite}",
                                                        title=f"{suite}: value and interval (group all)")
    return out


def _human_review_ok(section: dict[str, Any] | None) -> dict[str, Any] | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        raise CoherenceError("human_review: expected a dict (see coherence.report.build_report)")
    return {"reviewers": section.get("reviewers", []), "agreement": section.get("agreement", []),
            "tables": section.get("tables", []), "note": section.get("note", "")}


def build_report(path: str | Path, *, out: str | Path | None = None, evals: list[Path] | None = None,
                 human_review: dict[str, Any] | None = None) -> Path:
    """Write the HTML report of a run folder or an eval folder; returns the file written.

    Args:
        path: ``runs/<id>/`` (has ``run.db``) or ``evals/<id>/`` (has ``results.json``).
        out: where to write it (default: ``<path>/report.html``).
        evals: more eval folders to show in a run report (its own ``<run>/evals/*/`` are found anyway).
        human_review: the "human review" section, made by the review app (``coherence.review``), or None
            (the section then says that there are no reviews). Keys, all optional:

            - ``reviewers``: ``[{"name": str, "ratings": int}]``
            - ``agreement``: ``[{"what": str, "alpha": float | None, "units": int, "raters": int,
              "all_agree": float | None, "note": str}]`` (rows as :func:`coherence.judges.agreement.alpha`
              returns them, with ``what`` naming the comparison, e.g. "reviewers: P1" or
              "reviewers vs judges: pass/fail")
            - ``tables``: ``[{"title": str, "columns": [str], "rows": [[cell, ...]]}]``, any further tables
            - ``note``: str, a paragraph shown above them

            Every value is escaped when rendered.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CoherenceError(f"{folder}: no such folder (fix: give a runs/<id>/ folder or an evals/<id>/ folder)")
    env = _env()
    meta = {"generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "version": __version__}
    if (folder / "run.db").is_file():
        data = gather_run(folder, evals=evals)
        html = env.get_template("run.html.j2").render(
            d=data, charts=run_charts(data), human=_human_review_ok(human_review), meta=meta,
            status_order=STATUS_ORDER, sample_per_status=SAMPLE_PER_STATUS)
    elif (folder / "results.json").is_file():
        ev = load_eval(folder)
        html = env.get_template("eval.html.j2").render(ev=ev, charts=eval_charts(ev, prefix="eval_0"), meta=meta)
    else:
        raise CoherenceError(f"{folder}: neither a run folder (no run.db) nor an eval folder (no results.json) "
                             f"(fix: give a runs/<id>/ folder that `coherence run` created, or evals/<id>/)")
    target = Path(out) if out else folder / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(target)
    return target
