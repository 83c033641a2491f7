"""The review app over HTTP (FastAPI's TestClient): tokens, ratings, bad input, agreement, export."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from reviewing import XSS, build_run, copy_run, plant_xss

pytest.importorskip("fastapi", reason="the review extra is not installed: pip install -e '.[review]'")
from fastapi.testclient import TestClient  # noqa: E402

from coherence.errors import CoherenceError  # noqa: E402
from coherence.review import add_reviewer, open_run, revoke_reviewer, summarize  # noqa: E402
from coherence.review.app import create_app  # noqa: E402


@pytest.fixture(scope="session")
def template_run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("review-template"))


@pytest.fixture
def run(template_run, tmp_path):
    r = open_run(copy_run(template_run, tmp_path))
    yield r
    r.close()


def client_for(run, name="alice"):
    token = add_reviewer(run, name)
    client = TestClient(create_app(run), follow_redirects=False)
    assert client.get(f"/login?token={token}").status_code == 303
    return client, token


def full_form(run, seed_id, client, answer="yes", pick="A"):
    html = client.get(f"/t/{seed_id}").text
    form = {f"q_{q}": answer for q in run.questions} | {"comment": "ok"}
    for pair in ("r_plus_vs_r_minus", "thick_vs_thin"):
        marker = f'name="order_{pair}" value="'
        if marker in html:
            form[f"order_{pair}"] = html.split(marker)[1].split('"')[0]
            form[f"pick_{pair}"] = pick
    if 'name="thin_exemplar" value="' in html:
        form["thin_exemplar"] = html.split('name="thin_exemplar" value="')[1].split('"')[0]
    return form


def test_the_run_has_both_accepted_and_rejected_triplets(run):
    statuses = {t["status"] for t in run.store.review_queue()}
    assert "accepted" in statuses and len(statuses) > 1, statuses


def test_without_a_valid_token_no_page_shows_the_run(run):
    seed = run.store.review_queue()[0]["seed_id"]
    text = run.store.triplet(seed)["rejected"]
    anon = TestClient(create_app(run), follow_redirects=False)
    for url in ("/", f"/t/{seed}", "/summary", "/proposals"):
        r = anon.get(url)
        assert r.status_code == 401 and "Log in" in r.text
        assert seed not in r.text and text[:30] not in r.text and run.path.name not in r.text
    assert anon.post(f"/t/{seed}", data={"q_query_intent": "yes"}).status_code == 401
    assert run.store.review_count() == 0
    r = anon.get("/login?token=not-a-token")
    assert r.status_code == 401 and "wrong or was revoked" in r.text and "set-cookie" not in r.headers


def test_token_is_stored_only_as_its_hash_and_a_revoked_one_stops_at_once(run):
    client, token = client_for(run)
    cookie = client.cookies.get("coherence_review")
    assert cookie == token
    raw = (run.path / "run.db").read_bytes()
    assert token.encode() not in raw
    assert client.get("/").status_code == 200
    revoke_reviewer(run, "alice")
    r = client.get("/")
    assert r.status_code == 401 and run.path.name not in r.text
    with pytest.raises(CoherenceError, match="no reviewer 'bob'"):
        revoke_reviewer(run, "bob")


def test_the_session_cookie_is_httponly_and_samesite(run):
    token = add_reviewer(run, "alice")
    r = TestClient(create_app(run), follow_redirects=False).get(f"/login?token={token}")
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert r.headers["location"] == "/"  # the token leaves the address bar
    assert r.headers["referrer-policy"] == "no-referrer"


def test_a_rating_is_saved_with_reviewer_time_and_the_recorded_ab_order(run):
    client, _ = client_for(run)
    seed = run.store.review_queue()[0]["seed_id"]
    form = full_form(run, seed, client, answer="no", pick="B")
    r = client.post(f"/t/{seed}", data=form)
    assert r.status_code == 303 and "saved=" in r.headers["location"]
    [row] = run.store.latest_reviews("alice")
    assert row["seed_id"] == seed and row["reviewer"] == "alice" and row["created"] > 0
    assert set(row["answers"].values()) == {"no"} and len(row["answers"]) == 9 and row["comment"] == "ok"
    ab = row["ab"]["r_plus_vs_r_minus"]
    assert sorted(ab["order"]) == ["r_minus", "r_plus"] and ab["pick"] == "B" and ab["preferred"] == ab["order"][1]
    assert row["ab"]["thick_vs_thin"]["preferred"] in ("r_plus", "thin")
    # a second rating is a new row; the latest counts and the old one is kept
    client.post(f"/t/{seed}", data=full_form(run, seed, client, answer="yes"))
    assert run.store.review_count() == 2 and set(run.store.latest_reviews("alice")[0]["answers"].values()) == {"yes"}


def test_the_ab_order_is_randomised(run):
    client, _ = client_for(run)
    seed = run.store.review_queue()[0]["seed_id"]
    orders = {full_form(run, seed, client)["order_r_plus_vs_r_minus"] for _ in range(30)}
    assert orders == {"r_plus,r_minus", "r_minus,r_plus"}


def test_an_incomplete_rating_keeps_what_was_typed_and_saves_nothing(run):
    client, _ = client_for(run)
    seed = run.store.review_queue()[0]["seed_id"]
    form = full_form(run, seed, client)
    del form["q_query_natural"]
    form["comment"] = "my long careful comment"
    r = client.post(f"/t/{seed}", data=form)
    assert r.status_code == 422 and "query_natural: choose yes, no or unsure" in r.text
    assert "my long careful comment" in r.text and run.store.review_count() == 0


def test_a_rating_for_a_triplet_that_does_not_exist_is_a_clear_page_with_the_answers(run):
    client, _ = client_for(run)
    seed = run.store.review_queue()[0]["seed_id"]
    form = full_form(run, seed, client) | {"comment": "keep me"}
    r = client.post("/t/no-such-seed", data=form)
    assert r.status_code == 404 and "no triplet &#39;no-such-seed&#39;" in r.text and "keep me" in r.text
    assert "the rating was not saved" in r.text
    assert "Traceback" not in r.text and run.store.review_count() == 0
    assert client.get("/t/no-such-seed").status_code == 404
    with pytest.raises(CoherenceError, match="no triplet"):
        run.store.add_review(seed_id="nope", reviewer="alice", answers={}, comment="", ab={})


def test_model_text_is_escaped(run):
    seed = plant_xss(run.path)
    client, _ = client_for(run)
    html = client.get(f"/t/{seed}").text
    assert "<script>window.__xss" not in html and "&lt;script&gt;window.__xss" in html
    assert "<img src=x" not in html
    assert "script-src 'self'" in client.get(f"/t/{seed}").headers["content-security-policy"]


def test_not_a_run_and_a_newer_database_are_one_line_errors(tmp_path, run):
    with pytest.raises(CoherenceError, match="no such folder"):
        open_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CoherenceError, match="not a coherence run"):
        open_run(tmp_path / "empty")
    assert not (tmp_path / "empty" / "run.db").exists()
    import sqlite3

    db = sqlite3.connect(run.path / "run.db")
    db.execute("INSERT INTO _migrations VALUES ('099_from_the_future', 0)")
    db.commit()
    db.close()
    with pytest.raises(CoherenceError, match="newer coherence .*099_from_the_future"):
        open_run(run.path)


def test_cli_errors_have_no_traceback(tmp_path):
    from typer.testing import CliRunner

    from coherence.cli import app

    for args in (["review", str(tmp_path), "--summary"], ["export", str(tmp_path), "--exclude-rejected"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and "not a coherence run" in r.output and "Traceback" not in r.output


def test_cli_add_reviewer_prints_a_login_link_and_summary(run):
    from typer.testing import CliRunner

    from coherence.cli import app

    path = str(run.path)
    run.close()
    r = CliRunner().invoke(app, ["review", path, "--add-reviewer", "dana", "--port", "9999"])
    assert r.exit_code == 0 and "http://127.0.0.1:9999/login?token=" in r.output
    r = CliRunner().invoke(app, ["review", path, "--summary", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["reviewers"][0]["name"] == "dana"


def _rate(run, client, seeds, answers_for):
    for seed in seeds:
        form = full_form(run, seed, client)
        form.update({f"q_{q}": answers_for(seed, q) for q in run.questions})
        assert client.post(f"/t/{seed}", data=form).status_code == 303


def test_agreement_matches_krippendorff_on_the_same_matrix(run):
    import krippendorff

    seeds = [t["seed_id"] for t in run.store.review_queue()]
    a, _ = client_for(run, "alice")
    b, _ = client_for(run, "bob")
    _rate(run, a, seeds, lambda s, q: "yes" if (hash((s, q)) % 3) else "no")
    _rate(run, b, seeds, lambda s, q: "unsure" if q == "p2" else ("yes" if (hash((s, q)) % 4) else "no"))
    s = summarize(run.store)
    assert s["triplets_rated"] == len(seeds) and [r["triplets_rated"] for r in s["reviewers"]] == [len(seeds)] * 2
    rows = [[], []]
    for seed in seeds:
        for q in run.questions:
            va = 1.0 if (hash((seed, q)) % 3) else 0.0
            vb = math.nan if q == "p2" else (1.0 if (hash((seed, q)) % 4) else 0.0)
            rows[0].append(va)
            rows[1].append(vb)
    expected = krippendorff.alpha(reliability_data=rows, level_of_measurement="nominal")
    assert s["between_reviewers"]["alpha"] == pytest.approx(expected, abs=1e-4)
    assert s["between_reviewers"]["per_question"]["p2"]["units"] == 0
    vs = s["reviewers_vs_judges"]
    assert vs["units"] > 0 and set(vs["per_reviewer"]) == {"alice", "bob"}
    assert s["ab"]["r_plus_vs_r_minus"]["votes"] == 2 * len(seeds)
    page = a.get("/summary")
    assert page.status_code == 200 and "alpha" in page.text
    from coherence.review.agreement import report_section

    section = report_section(s)
    assert section["agreement"][0]["alpha"] == s["between_reviewers"]["alpha"]
    assert {r["name"] for r in section["reviewers"]} == {"alice", "bob"} and section["tables"][0]["rows"]


def test_judge_labels_follow_the_unanimous_filter(run):
    from coherence.review.agreement import judge_labels

    for t in run.store.review_queue():
        labels = judge_labels(run.store, t["seed_id"], run.criteria)
        if t["status"] in ("accepted", "over_quota"):  # both passed the filter
            assert all(labels[c] == 1.0 for c in run.criteria)
        elif labels:
            assert any(labels.get(c) == 0.0 for c in run.criteria)


def test_export_can_drop_triplets_reviewers_rejected(run):
    from coherence.export import export_folder

    accepted = [t["seed_id"] for t in run.store.review_queue() if t["status"] == "accepted"]
    a, _ = client_for(run, "alice")
    _rate(run, a, accepted[:1], lambda s, q: "no" if q == "query_natural" else "yes")
    _rate(run, a, accepted[1:2], lambda s, q: "unsure" if q == "chosen_safe" else "yes")
    full = export_folder(run.path)
    dropped = export_folder(run.path, exclude_rejected=True)
    assert full["rows"] == len(accepted) and dropped["rows"] == len(accepted) - 1
    assert dropped["excluded_by_reviewers"] == 1
    ids = [json.loads(line)["seed_id"] for line in (run.path / "triplets.jsonl").read_text().splitlines()]
    assert accepted[0] not in ids and accepted[1] in ids
    assert "rejected them" in (run.path / "dataset" / "README.md").read_text()


def test_pack_proposals_are_decided_in_the_browser_as_pack_accept_does(run):
    client, _ = client_for(run, "mina")
    page = client.get("/proposals")
    assert "prop-slot-value-test000001" in page.text and "York" in page.text
    r = client.post("/proposals/prop-slot-value-test000001", data={"action": "accept"})
    assert r.status_code == 303
    data = yaml.safe_load((run.pack.path / "proposals.yaml").read_text(encoding="utf-8"))
    [p] = data["proposals"]
    assert p["status"] == "accepted" and p["reviewer"] == "mina"
    r = client.post("/proposals/prop-slot-value-test000001", data={"action": "reject"})
    assert r.status_code == 400 and "no pending proposal" in r.text
    assert "Traceback" not in r.text


def test_the_pipeline_can_rewrite_a_rated_triplet(run):
    """record_triplet is INSERT OR REPLACE: a rating must not block it (no foreign key on reviews)."""
    client, _ = client_for(run)
    t = next(run.store.triplets())
    assert client.post(f"/t/{t['seed_id']}", data=full_form(run, t["seed_id"], client)).status_code == 303
    run.store.record_triplet(seed_id=t["seed_id"], domain=t["domain"], status=t["status"], reason=t["reason"],
                             prompt=t["prompt"], chosen=t["chosen"], rejected=t["rejected"],
                             provenance=t["provenance"], verdicts=[])
    assert run.store.review_count() == 1
