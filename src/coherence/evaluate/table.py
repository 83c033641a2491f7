"""The terminal table of an eval: rows are metrics, columns are models, then one delta column per
model compared with the base (difference, 95% interval, p-value). With more than one model compared with
the base (a recipe sweep), one table per compared model (base, it, delta): six models side by side do not
fit a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

SHOWN_GROUPS = ("all",)
"""Groups shown for every metric; ASR is also shown per strategy (everything is in results.json)."""


def _cell(m: dict[str, Any] | None) -> str:
    if m is None or m["value"] is None:
        return "-"
    ci = f" [{m['ci'][0]:.2f}, {m['ci'][1]:.2f}]" if m.get("ci") else ""
    return f"{m['value']:.2f}{ci} n={m['n']}"


def _delta(c: dict[str, Any] | None) -> str:
    if c is None:
        return "-"
    p = "" if c["p_value"] is None else f" p={c['p_value']:.2g}"
    return f"{c['delta']:+.2f} [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]{p}"


def rows_of(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(suite, metric, group) of the rows the table shows, in order."""
    seen: list[tuple[str, str, str]] = []
    for m in results["metrics"]:
        key = (m["suite"], m["metric"], m["group"])
        show = (m["group"] in SHOWN_GROUPS or (m["metric"] == "asr" and m["group"].startswith("strategy:"))
                or m["suite"] == "anchoring")
        if show and key not in seen:
            seen.append(key)
    return seen


def render(results: dict[str, Any], console: Console) -> None:
    labels = [m["label"] for m in results["models"]]
    for shown in ([labels] if len(labels) <= 2 else [[labels[0], other] for other in labels[1:]]):
        _table(results, shown, console)
    _footer(results, console)


def _table(results: dict[str, Any], labels: list[str], console: Console) -> None:
    metrics = {(m["suite"], m["metric"], m["group"], m["model"]): m for m in results["metrics"]}
    comps = {(c["suite"], c["metric"], c["group"], c["other"]): c for c in results["comparisons"]}
    table = Table(title=f"eval {results['eval_id']} (pack {results['pack']['name']}@{results['pack']['version']}); "
                        f"value [95% interval: Wilson; KoBBQ bootstrap] n; delta vs {labels[0]} [95% CI] p")
    table.add_column("suite", overflow="fold")
    table.add_column("metric", overflow="fold")
    for label in labels:
        table.add_column(label, justify="right", overflow="fold")
    for label in labels[1:]:
        table.add_column(f"delta {label}", justify="right", overflow="fold")
    for suite, metric, group in rows_of(results):
        name = metric if group == "all" else f"{metric} ({group})"
        if suite == "thick_thin" and metric != "judge_prefers_thick_exemplar":
            cells = ["-"] + [_cell(metrics.get((suite, metric, group, label))) for label in labels[1:]]
        elif metric == "judge_prefers_thick_exemplar":
            judge = next(m for (s, mm, g, _), m in metrics.items() if mm == metric)
            cells = [_cell(judge)] + ["" for _ in labels[1:]]
        else:
            cells = [_cell(metrics.get((suite, metric, group, label))) for label in labels]
        deltas = [_delta(comps.get((suite, metric, group, label))) for label in labels[1:]]
        if metric.endswith("_framing_effect"):
            deltas = ["" for _ in labels[1:]]
        table.add_row(suite, name, *cells, *deltas)
    console.print(table)


def _footer(results: dict[str, Any], console: Console) -> None:
    check = results.get("judge_checks", {}).get("pairwise")
    if check and not check["reliable"]:
        console.print(f"[yellow]unreliable pairwise judge:[/] {check['judge']} prefers the thick exemplar in "
                      f"{check['prefers_thick']:.0%} of {check['n']} pairs ({check['rule']})")
    if results.get("offline_judges"):
        console.print("[yellow]offline heuristic judges:[/] stand-ins that exercise the eval, not measuring "
                      "instruments; do not read these figures as findings about safety")
    calls = results.get("calls", {})
    console.print(f"model calls: {calls.get('made', 0)} made, {calls.get('cached', 0)} from the eval's store; "
                  f"{results.get('wall_seconds')} s\nresults: {results['out']}/results.json  answers: "
                  f"{results['out']}/answers.jsonl  logs: inspect view --log-dir {results['out']}/logs")
