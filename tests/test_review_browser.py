"""The review app in a real Chromium (Debian's /usr/bin/chromium driven by Playwright; never a
downloaded browser). Screenshots go to test-artifacts/review/. Skipped, with the reason, where there
is no chromium: the rest of the suite runs without a browser (``pytest -m "not browser"``)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from reviewing import build_run, copy_run, plant_xss

CHROMIUM = os.environ.get("COHERENCE_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts" / "review"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install "
                       "chromium; or set COHERENCE_CHROMIUM); the other tests run without it"),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
pytest.importorskip("fastapi", reason="the review extra is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(run, base url, xss seed id) with the app served on a free local port."""
    import uvicorn

    from coherence.review import open_run
    from coherence.review.app import create_app

    base = tmp_path_factory.mktemp("browser")
    run_dir = copy_run(build_run(base / "template"), base / "copy")
    xss_seed = plant_xss(run_dir)
    run = open_run(run_dir)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(run), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    yield run, f"http://127.0.0.1:{port}", xss_seed
    server.should_exit = True
    thread.join(timeout=5)
    run.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                       args=FLAGS, viewport={"width": 1280, "height": 900})
        yield context
        context.close()


@pytest.fixture
def page(browser):
    browser.clear_cookies()
    pg = browser.new_page()
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.dialogs = dialogs
    yield pg
    pg.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_login_without_and_with_a_token(served, page):
    from coherence.review import add_reviewer

    run, url, _ = served
    page.goto(url + "/")
    assert page.locator("h1").inner_text() == "Log in"
    assert run.path.name not in page.content()
    page.goto(url + "/login?token=wrong")
    assert "wrong or was revoked" in page.locator("#login-message").inner_text()
    shot(page, "01-login-refused")
    token = add_reviewer(run, "ji-woo")
    page.goto(url + f"/login?token={token}")
    assert page.url == url + "/"  # the token leaves the address bar
    assert "You rated 0 of" in page.locator("#progress").inner_text()
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read the session
    shot(page, "02-triplet-list")


def test_rate_a_triplet_with_the_keyboard(served, page):
    from coherence.review import add_reviewer

    run, url, _ = served
    page.goto(url + f"/login?token={add_reviewer(run, 'min-seo')}")
    page.keyboard.press("n")  # the next unrated triplet
    page.wait_for_selector("#rating")
    seed = page.url.rsplit("/t/", 1)[1].split("?")[0]
    assert not page.locator("#r-plus").is_visible()  # blind: the labelled answers wait for the picks
    page.keyboard.press("a")  # r+ vs r-
    page.keyboard.press("b")  # thick vs thin
    assert page.locator("#r-plus").is_visible()
    for key in "yyynyyyuy":  # nine questions
        page.keyboard.press(key)
    page.keyboard.press("c")
    page.keyboard.type("typed with the keyboard")
    page.keyboard.press("Escape")
    shot(page, "03-rating-filled-by-keyboard")
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    assert "saved" in page.locator("#progress").inner_text()
    [row] = run.store.latest_reviews("min-seo")
    assert row["seed_id"] == seed and row["comment"] == "typed with the keyboard"
    assert list(row["answers"].values()) == ["yes", "yes", "yes", "no", "yes", "yes", "yes", "unsure", "yes"]
    assert row["ab"]["r_plus_vs_r_minus"]["pick"] == "A" and row["ab"]["thick_vs_thin"]["pick"] == "B"
    assert "you rated 1 of" in page.locator("#progress").inner_text()
    page.goto(url + "/summary")
    shot(page, "04-agreement-summary")


def test_an_xss_payload_in_r_minus_stays_inert(served, page):
    from coherence.review import add_reviewer

    run, url, seed = served
    page.goto(url + f"/login?token={add_reviewer(run, 'xss-check')}")
    page.goto(url + f"/t/{seed}")
    assert "<script>window.__xss" in page.locator("#r-minus").text_content()  # shown as text
    assert page.evaluate("window.__xss === undefined")
    assert page.locator("#r-minus img").count() == 0 and page.locator("#r-minus script").count() == 0
    page.goto(url + "/")
    assert page.dialogs == []
    page.goto(url + f"/t/{seed}")
    shot(page, "05-xss-inert")
    assert page.evaluate("window.__xss === undefined") and page.dialogs == []


def test_the_report_renders_its_charts_and_the_human_review_and_keeps_r_minus_inert(served, page, tmp_path):
    from typer.testing import CliRunner

    from coherence.cli import app

    run, _, seed = served
    run.store.add_reviewer("report-check", "sha256:unused")
    answers = {q: "yes" for q in run.questions}
    run.store.add_review(seed_id=seed, reviewer="report-check", answers=answers, comment="",
                         ab={"r_plus_vs_r_minus": {"order": ["r_minus", "r_plus"], "pick": "B", "preferred": "r_plus"}})
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(run.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page.goto(out.as_uri())
    charts = page.locator("svg")
    assert charts.count() >= 3
    sizes = [charts.nth(i).bounding_box() for i in range(charts.count())]
    assert all(b and b["width"] > 50 and b["height"] > 50 for b in sizes[:3])  # drawn, not empty
    human = page.locator("#human-review")
    assert "report-check" in human.inner_text() and "Krippendorff" in human.inner_text()
    assert "<script>window.__xss" in page.content().replace("&lt;", "<").replace("&gt;", ">")
    assert page.locator("script:has-text('window.__xss')").count() == 0
    assert page.evaluate("window.__xss === undefined") and page.dialogs == []
    shot(page, "06-report")
    human.scroll_into_view_if_needed()
    human.screenshot(path=str(ARTIFACTS / "07-report-human-review.png"))
