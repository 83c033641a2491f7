"""`coherence report`: a self-contained HTML report of a run (and of an eval folder), escaped, offline."""

import json
import re
import sqlite3

import pytest
from typer.testing import CliRunner

from coherence.cli import app
from coherence.report import alpha, build_report, filter_agreement, gather_run

from conftest import mock_target, run_pipeline

XSS = '<script>alert("r-")</script><img src=x onerror=alert(1)>'

SECTIONS = ("overview", "pack", "funnel", "quota", "attacks", "generators", "judges", "rejections", "costs",
            "training", "evaluation", "human-review", "sample")


def xss_target(messages, task):
    """The conftest target, with a script planted in every answer (so in every r-)."""
    return mock_target(messages, task) + " " + XSS


def eval_results(pack="en-GB"):
    """A results.json as the evaluation contract (notes/common.md) describes it."""
    return {
        "eval_id": "ev1", "created": "2026-12-03T12:00:00Z",
        "pack": {"name": pack, "version": "0.1.0", "digest": "sha256:abc"},
        "models": [{"label": "base", "spec": "local:smollm2"}, {"label": "tuned", "spec": "local:smollm2+adapter"}],
        "judges": {"safety": "offline:judge"}, "versions": {"inspect_ai": "0.3"}, "offline_judges": True,
        "metrics": [
            {"suite": "safety", "metric": "safety_rate", "group": "all", "model": "base", "value": 0.41,
             "n": 120, "ci": [0.33, 0.5]},
            {"suite": "safety", "metric": "safety_rate", "group": "all", "model": "tuned", "value": 0.77,
             "n": 120, "ci": [0.69, 0.84]},
            {"suite": "safety", "metric": "safety_rate", "group": "domain:privacy", "model": "base", "value": None,
             "n": 0, "ci": None},
        ],
        "comparisons": [{"suite": "safety", "metric": "safety_rate", "group": "all", "base": "base", "other": "tuned",
                         "delta": 0.36, "ci": [0.25, 0.47], "p_value": 0.0001, "n": 120, "test": "mcnemar"}],
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from coherence.models import register_mock
    from coherence.train.metrics import collect

    register_mock("xss", xss_target)
    _, run = run_pipeline(tmp_path_factory.mktemp("report"), {"roles.target": {"model": "mock:xss"},
                                                              "pipeline.target_count": 6})
    # a training job as coherence.train writes it: the trainer's log lines, collected by train.metrics
    job = run / "train" / "tiny-dpo"
    job.mkdir(parents=True)
    log = [{"step": s, "epoch": s / 4, "loss": 0.69 - 0.05 * s, "rewards/chosen": 0.01 * s,
            "rewards/rejected": -0.02 * s, "rewards/accuracies": 0.5 + 0.1 * s, "rewards/margins": 0.03 * s}
           for s in range(1, 5)] + [{"step": 4, "epoch": 1.0, "eval_loss": 0.6, "eval_rewards/accuracies": 0.75}]
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (job / "metrics.json").write_text(json.dumps(collect(job / "metrics.jsonl")))
    (job / "result.json").write_text(json.dumps({"steps": 4, "heldout_triplets": 2, "train_triplets": 4,
                                                 "heldout_start": {"loss": 0.693}, "heldout_end": {"loss": 0.6}}))
    (run / "evals" / "ev1").mkdir(parents=True)
    (run / "evals" / "ev1" / "results.json").write_text(json.dumps(eval_results()))
    return run


@pytest.fixture(scope="module")
def html(run_dir):
    return build_report(run_dir).read_text(encoding="utf-8")


def _section(html, name):
    m = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert m, f"section {name} missing"
    return m.group(1)


def test_every_section_is_present_and_filled(run_dir, html):
    data = gather_run(run_dir)
    for name in SECTIONS:
        _section(html, name)
    assert data["funnel"][0]["total"] > 0 and data["funnel"][-1]["total"] > 0
    assert "<svg" in _section(html, "funnel") and "<svg" in _section(html, "attacks")
    assert "<svg" in _section(html, "generators") and "<svg" in _section(html, "judges")
    assert "<svg" in _section(html, "training") and "tiny-dpo" in _section(html, "training")
    assert "Krippendorff" in _section(html, "judges")
    assert "offline:judge-morph" in _section(html, "judges")
    ev = _section(html, "evaluation")
    assert "0.770 [0.690, 0.840] (120)" in ev and "mcnemar" in ev and "say nothing about" not in ev
    assert "exercises every scorer" in ev  # offline judges are labelled as the stand-in they are
    assert data["pack"]["ref"] in _section(html, "pack") and data["pack"]["digest"] in _section(html, "pack")
    assert "No human reviews" in _section(html, "human-review")
    sample = _section(html, "sample")
    assert sample.count('<details class="triplet"') == len(data["sample"]) > 0
    assert "offline" in _section(html, "overview")  # offline roles are named as stand-ins
    costs = _section(html, "costs")
    assert "<td>generators[0]</td>" in costs and "<td>target</td>" in costs and "mock:xss" in costs


def test_model_text_is_escaped(html):
    assert XSS not in html
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;r-&#34;)&lt;/script&gt;" in _section(html, "sample")
    assert html.count("<script>") == 1  # the report's own filter script, nothing else


def test_nothing_is_fetched(run_dir, html):
    sources = {s.url for s in gather_run(run_dir)["pack"]["loaded"].meta.sources}  # shown as text, not links
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert {u for u in urls if not u.startswith("http://www.w3.org/")} - sources == set()  # SVG namespaces only
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html)
    assert "default-src 'none'" in html  # the browser refuses any fetch even if one slipped in


def test_the_gathered_numbers_match_the_store(run_dir):
    data = gather_run(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    stages = {r["stage"]: r["total"] for r in data["funnel"]}
    assert stages["seeds"] == summary["funnel"]["seeds"]
    assert stages["accepted (within quota)"] == summary["funnel"]["accepted"]
    assert stages["r+ chosen (stage C)"] == summary["funnel"]["responded"]
    assert sum(r["wins"] for r in data["generators"]["rows"]) == summary["funnel"]["responded"]
    jb = {s["strategy"]: s["jailbroken"] for s in data["attacks"]["per_strategy"] if s["jailbroken"]}
    assert jb == summary["jailbreaks_per_strategy"]
    assert sum(c["calls"] for c in data["calls"]) == summary["all_invocations"]["calls"]


def test_human_review_section_is_fed_by_a_dict(run_dir, tmp_path):
    out = build_report(run_dir, out=tmp_path / "r.html", human_review={
        "note": "two reviewers", "reviewers": [{"name": "<b>kim</b>", "ratings": 10}],
        "agreement": [{"what": "reviewers: P1", "alpha": 0.61, "units": 10, "raters": 2, "all_agree": 0.8, "note": ""}],
        "tables": [{"title": "per criterion", "columns": ["criterion", "yes", "alpha"], "rows": [["P2", 7, 0.12345]]}]})
    section = _section(out.read_text(encoding="utf-8"), "human-review")
    assert "&lt;b&gt;kim&lt;/b&gt;" in section and "0.610" in section and "per criterion" in section
    assert "<td>0.123</td>" in section


def test_eval_folder_report(tmp_path):
    folder = tmp_path / "evals" / "ev1"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(eval_results()))
    html = build_report(folder).read_text(encoding="utf-8")
    assert "0.410 [0.330, 0.500] (120)" in html and "<svg" in html and "domain:privacy" in html
    broken = tmp_path / "evals" / "bad"
    broken.mkdir()
    (broken / "results.json").write_text(json.dumps({"eval_id": "x", "models": []}))
    result = CliRunner().invoke(app, ["report", str(broken)])
    assert result.exit_code == 2 and "missing field 'metrics'" in result.output


def _one_line_error(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.strip().startswith("error:")
    return " ".join(result.output.split())


def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path):
    assert "neither a run folder" in _one_line_error(["report", str(tmp_path)])
    assert "no such folder" in _one_line_error(["report", str(tmp_path / "nope")])
    (tmp_path / "run.db").write_bytes(b"not sqlite at all" * 100)
    assert "not a coherence run database" in _one_line_error(["report", str(tmp_path)])


def test_a_database_from_a_newer_version_is_a_clear_error(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    db = sqlite3.connect(copy / "run.db")
    db.execute("INSERT INTO _migrations VALUES ('099_future', 0)")
    db.commit()
    db.close()
    message = _one_line_error(["report", str(copy)])
    assert "newer coherence" in message and "099_future" in message


def test_cli_writes_the_report(run_dir, tmp_path):
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.html").read_text(encoding="utf-8").startswith("<!doctype html>")


def test_alpha():
    perfect = {f"u{i}": {"a": i % 2 == 0, "b": i % 2 == 0} for i in range(6)}
    assert alpha(perfect)["alpha"] == pytest.approx(1.0)
    split = {"u1": {"a": True, "b": False}, "u2": {"a": False, "b": True}, "u3": {"a": True, "b": True},
             "u4": {"a": False, "b": False}}
    assert alpha(split)["alpha"] == pytest.approx(0.125)  # 2 of 4 agree: alpha = 1 - D_o/D_e = 1 - 0.5/(4/7)
    same = alpha({"u1": {"a": True, "b": True}})
    assert same["alpha"] is None and "no variation" in same["note"] and same["all_agree"] == 1.0
    lone = alpha({"u1": {"a": True}})
    assert lone["alpha"] is None and lone["units"] == 0


def test_filter_agreement_per_criterion():
    def vote(seed, judge, ok, **criteria):
        return {"seed_id": seed, "judge": judge, "passed": ok, "detail": {"criteria": criteria}}

    votes = [vote("s1", "a", True, x=True, y=True), vote("s1", "b", True, x=True, y=True),
             vote("s2", "a", False, x=False, y=True), vote("s2", "b", False, x=False, y=True),
             vote("s3", "a", True, x=True, y=True), vote("s3", "b", None)]
    out = filter_agreement(votes)
    rows = {r["what"]: r for r in out["rows"]}
    assert out["judges"] == ["a", "b"]
    assert rows["pass / fail"]["units"] == 2 and rows["pass / fail"]["alpha"] == pytest.approx(1.0)
    assert rows["x"]["alpha"] == pytest.approx(1.0) and rows["y"]["alpha"] is None  # y: always true


def test_a_run_without_summary_still_reports(run_dir, tmp_path):
    """A run killed before its first summary (or still running) is reported from its store alone."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "summary.json").unlink()
    html = build_report(copy).read_text(encoding="utf-8")
    assert "unknown (no summary.json)" in html
    assert gather_run(copy)["funnel"][-1]["total"] == gather_run(run_dir)["funnel"][-1]["total"]


def test_a_run_that_has_not_started_reports_empty_sections(tmp_path):
    from coherence.store import Store

    Store(tmp_path / "run.db").close()  # what `coherence run` leaves before stage A writes anything
    html = build_report(tmp_path).read_text(encoding="utf-8")
    for name in SECTIONS:
        _section(html, name)
    assert "records no pack yet" in html and "No attack attempts yet" in html and "No stage-D votes yet" in html
