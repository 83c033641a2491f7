"""Two scripted reviewers rate N triplets each through the review app in a real Chromium, then print
the agreement summary (``coherence review RUN --summary``).

The reviewers are scripts, not native speakers: each starts from the judge ensemble's label of a
question and flips it with a fixed probability (reviewer 1: 10%, reviewer 2: 20%, and 10% "unsure"),
seeded; the A/B picks prefer r+ with 90% / 75%. The figures show that the app, the store and the
agreement code work end to end; they say nothing about the data's quality.

    python scripts/review_two_reviewers.py RUN_COPY [--n 10] [--shots test-artifacts/review-demo]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import tempfile
import threading
import time
from pathlib import Path

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
REVIEWERS = (("reviewer-1", 0.10, 0.0, 0.90), ("reviewer-2", 0.20, 0.10, 0.75))


def main() -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from coherence.review import add_reviewer, open_run, summarize
    from coherence.review.agreement import judge_labels
    from coherence.review.app import create_app

    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--shots", default="test-artifacts/review-demo")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    run = open_run(args.run)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(run), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    queue = run.store.review_queue()
    # every accepted triplet the first n can hold, then filter-rejected ones: both kinds, so that the
    # judges' labels vary
    accepted = [t["seed_id"] for t in queue if t["status"] == "accepted"]
    others = [t["seed_id"] for t in sorted(queue, key=lambda t: t["status"] != "rejected") if t["status"] != "accepted"]
    chosen = (accepted[: args.n // 2] + others)[: args.n]
    chosen += [s for s in accepted if s not in chosen][: args.n - len(chosen)]
    rng = random.Random(13)
    started = time.time()
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=args.chromium, headless=True,
                                                   args=FLAGS, viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        for name, flip, unsure, prefer in REVIEWERS:
            ctx.clear_cookies()
            page.goto(f"{url}/login?token={add_reviewer(run, name)}")
            for i, seed in enumerate(chosen):
                page.goto(f"{url}/t/{seed}")
                labels = judge_labels(run.store, seed, run.criteria)
                for pair in page.locator("fieldset.pair").all():  # the blind pairs come first
                    order = pair.locator("input[type=hidden]").first.get_attribute("value").split(",")
                    better = "r_plus" if rng.random() < prefer else [s for s in order if s != "r_plus"][0]
                    page.keyboard.press("a" if order[0] == better else "b")
                for q in run.questions:
                    truth = labels.get(q, 1.0)
                    value = truth if rng.random() >= flip else 1.0 - truth
                    page.keyboard.press("u" if rng.random() < unsure else ("y" if value else "n"))
                if i == 0:
                    page.screenshot(path=str(shots / f"{name}-first-rating.png"), full_page=True)
                with page.expect_navigation():
                    page.keyboard.press("Control+Enter")
        page.goto(f"{url}/summary")
        page.screenshot(path=str(shots / "summary.png"), full_page=True)
        ctx.close()
    server.should_exit = True
    summary = summarize(run.store)
    run.close()
    print(json.dumps({"rated_per_reviewer": len(chosen), "seconds": round(time.time() - started, 1),
                      "between_reviewers_alpha": summary["between_reviewers"]["alpha"],
                      "reviewers_vs_judges_alpha": summary["reviewers_vs_judges"]["alpha"],
                      "per_reviewer_vs_judges": {k: (v["alpha"], v["percent_agreement"])
                                                 for k, v in summary["reviewers_vs_judges"]["per_reviewer"].items()},
                      "ab": {k: v["share_r_plus"] for k, v in summary["ab"].items()}}, indent=1))


if __name__ == "__main__":
    main()
