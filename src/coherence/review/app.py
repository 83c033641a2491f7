"""The review web app: FastAPI with server-rendered, autoescaped Jinja2 pages; no JavaScript build step
(one small vanilla script for keyboard shortcuts, served from the package). Imported only when
serving: it needs the ``review`` extra.

Without a valid token nothing of the run shows: every page but the login page and the static files
asks for the session cookie (the reviewer's token, HttpOnly, SameSite=Lax, checked against its sha256
in ``run.db`` on every request, so a revoked token stops working at once).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException

from coherence.errors import CoherenceError
from coherence.review.agreement import summarize
from coherence.review.run import ReviewRun, open_run, page, parse_rating, reviewer_for

log = logging.getLogger(__name__)
COOKIE = "coherence_review"
HERE = Path(__file__).parent
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class NotLoggedIn(Exception):
    """No valid session: the login page answers, showing nothing of the run."""


def create_app(run: ReviewRun, *, secure_cookie: bool = False) -> FastAPI:
    """The ASGI app serving one run.

    Args:
        run: from :func:`coherence.review.run.open_run`.
        secure_cookie: mark the session cookie Secure (behind HTTPS).
    """
    env = Environment(loader=PackageLoader("coherence.review", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def render(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(**ctx)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def error(status: int, title: str, message: str, **ctx: Any) -> HTMLResponse:
        return render("error.html", status, title=title, message=message, **ctx)

    def reviewer(request: Request) -> str:
        name = reviewer_for(run, request.cookies.get(COOKIE))
        if name is None:
            raise NotLoggedIn()
        return name

    @app.exception_handler(NotLoggedIn)
    async def _login_needed(request: Request, exc: NotLoggedIn) -> Response:
        return render("login.html", 401, message="Log in with the link the run's owner gave you.")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, "Not found" if exc.status_code == 404 else "Error",
                     "There is no such page." if exc.status_code == 404 else str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.error("review app: %s: %s", type(exc).__name__, exc)
        return error(500, "Something went wrong", f"{type(exc).__name__}: {exc}. Nothing was changed; "
                     "go back and try again (your browser keeps the form).")

    def login_with(token: str) -> Response:
        name = reviewer_for(run, token.strip())
        if name is None:
            return render("login.html", 401, message="This token is wrong or was revoked. Ask the run's owner "
                          "for a new link (coherence review RUN --add-reviewer NAME).")
        resp = RedirectResponse("/", status_code=303, headers=HEADERS)
        resp.set_cookie(COOKIE, token.strip(), httponly=True, samesite="lax", secure=secure_cookie,
                        max_age=30 * 24 * 3600, path="/")
        return resp

    @app.get("/login")
    async def login_page(token: str = "") -> Response:
        if token:
            return login_with(token)
        return render("login.html", message="")

    @app.post("/login")
    async def login_post(request: Request) -> Response:
        form = await request.form()
        return login_with(str(form.get("token", "")))

    @app.post("/logout")
    async def logout() -> Response:
        resp = RedirectResponse("/login", status_code=303, headers=HEADERS)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    def queue_for(name: str) -> tuple[list[dict[str, Any]], set[str]]:
        mine = {r["seed_id"] for r in run.store.latest_reviews(name)}
        return run.store.review_queue(), mine

    def next_unrated(name: str, after: str = "") -> str | None:
        queue, mine = queue_for(name)
        ids = [t["seed_id"] for t in queue]
        start = ids.index(after) + 1 if after in ids else 0
        for seed in ids[start:] + ids[:start]:
            if seed not in mine:
                return seed
        return None

    @app.get("/")
    async def index(request: Request) -> Response:
        name = reviewer(request)
        queue, mine = queue_for(name)
        return render("index.html", reviewer=name, run=run.path.name, pack=run.pack.ref, queue=queue,
                      mine=mine, next=next_unrated(name))

    def rating_page(name: str, seed_id: str, status: int = 200, values: dict[str, str] | None = None,
                    problems: list[str] | None = None, saved: str = "") -> Response:
        data = page(run, seed_id, keep=values)
        if data is None:
            return error(404, "No such triplet", f"This run has no triplet {seed_id!r}.")
        queue, mine = queue_for(name)
        previous = {r["seed_id"]: r for r in run.store.latest_reviews(name)}.get(seed_id)
        if values is None and previous is not None:
            values = {f"q_{k}": v for k, v in previous["answers"].items()} | {"comment": previous["comment"]}
        return render("rate.html", status, reviewer=name, run=run.path.name, d=data, values=values or {},
                      problems=problems or [], done=len(mine), total=len(queue), saved=saved,
                      rerating=previous is not None, position=[t["seed_id"] for t in queue].index(seed_id) + 1)

    @app.get("/t/{seed_id}")
    async def rate_get(request: Request, seed_id: str, saved: str = "") -> Response:
        return rating_page(reviewer(request), seed_id, saved=saved)

    @app.post("/t/{seed_id}")
    async def rate_post(request: Request, seed_id: str) -> Response:
        name = reviewer(request)
        form = {k: str(v) for k, v in (await request.form()).items()}
        if run.store.triplet(seed_id) is None:
            return error(404, "No such triplet", f"This run has no triplet {seed_id!r}; the rating was not "
                         "saved. Your answers are below so that nothing is lost.", submitted=form)
        answers, comment, ab, problems = parse_rating(run, form)
        if problems:
            return rating_page(name, seed_id, 422, values=form, problems=problems)
        try:
            run.store.add_review(seed_id=seed_id, reviewer=name, answers=answers, comment=comment, ab=ab)
        except CoherenceError as exc:
            return error(404, "Not saved", f"{exc}. Your answers are below so that nothing is lost.",
                         submitted=form)
        except Exception as exc:  # e.g. database locked: keep the form, say so
            log.error("review app: saving a rating failed: %s", exc)
            return rating_page(name, seed_id, 503, values=form,
                               problems=[f"not saved ({type(exc).__name__}: {exc}); submit again"])
        nxt = next_unrated(name, after=seed_id)
        target = f"/t/{quote(nxt)}?saved={quote(seed_id)}" if nxt else f"/?saved={quote(seed_id)}"
        return RedirectResponse(target, status_code=303, headers=HEADERS)

    @app.get("/proposals")
    async def proposals(request: Request, done: str = "") -> Response:
        name = reviewer(request)
        pending = [p for p in _proposals(run) if p.get("status", "proposed") == "proposed"]
        return render("proposals.html", reviewer=name, run=run.path.name, pack=run.pack.ref, pending=pending,
                      done=done)

    @app.post("/proposals/{proposal_id}")
    async def proposal_decide(request: Request, proposal_id: str) -> Response:
        from coherence.authoring import review as decide

        name = reviewer(request)
        action = str((await request.form()).get("action", ""))
        if action not in ("accept", "reject"):
            return error(400, "Unknown action", f"action {action!r}: use accept or reject.")
        try:
            decide(run.pack.path, ids=[proposal_id], reviewer=name, accept=action == "accept")
        except CoherenceError as exc:
            return error(400, "Not changed", str(exc))
        return RedirectResponse(f"/proposals?done={quote(action + 'ed ' + proposal_id)}", status_code=303,
                                headers=HEADERS)

    @app.get("/summary")
    async def summary(request: Request) -> Response:
        name = reviewer(request)
        return render("summary.html", reviewer=name, run=run.path.name, s=summarize(run.store))

    return app


def _proposals(run: ReviewRun) -> list[dict[str, Any]]:
    import yaml

    path = run.pack.path / "proposals.yaml"
    data = (yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None) or {}
    return list(data.get("proposals", []))


def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the review app for ``run_dir`` until interrupted."""
    import socket

    import uvicorn

    try:  # a port in use is a one-line error, not uvicorn's exit
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise CoherenceError(f"cannot serve on {host}:{port}: {exc.strerror or exc} (fix: --port another port, "
                             f"or stop what uses it)") from None
    run = open_run(run_dir)
    try:
        uvicorn.run(create_app(run), host=host, port=port, log_level="warning")
    finally:
        run.close()
