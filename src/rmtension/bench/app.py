"""The bench's web app: access control, security headers and the page helpers the views share.

Nothing but `/login` answers without a valid session cookie. Every POST carries the page's CSRF
token and a declared, bounded body. Pages are Jinja2 templates with autoescaping on; model and
reviewer text reach the page only as escaped text or, from the page script, as text nodes; a
Content-Security-Policy allows no inline script at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from rmtension.bench import access
from rmtension.bench.store import Refused
from rmtension.bench.task import Task

HERE = Path(__file__).parent
COOKIE = "bench_session"
MAX_BODY = 32 * 1024
"""Bytes a POST may carry: a turn (4,000 characters), a note and the form's fields fit many times."""
PUBLIC = ("/login",)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


@dataclass
class Bench:
    """What the views share: the database, the tasks served and each live task's reply source."""

    engine: Engine
    tasks: dict[str, Task]
    replies: dict[str, object] = field(default_factory=dict)
    """Task name -> an object whose `stream(turns, seed)` yields the events of `bench.replies.PolicyReplies`."""


def page(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    """Render a template for the signed-in reviewer, with the CSRF token for its forms."""
    html = templates.get_template(template).render(
        reviewer=request.state.reviewer, csrf=access.csrf_token(request.state.session), **context
    )
    return HTMLResponse(html, status_code=status)


def login_page(message: str, status: int) -> HTMLResponse:
    return HTMLResponse(templates.get_template("login.html").render(message=message), status_code=status)


async def posted(request: Request) -> dict[str, str]:
    """The posted form's text fields, after the CSRF check (403 without the session's token)."""
    try:
        form = await request.form(max_files=0, max_fields=32)
    except Exception:
        raise HTTPException(400, "unreadable form") from None
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not access.csrf_ok(request.state.session, fields.get("csrf")):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page")
    return fields


def _bounded(request: Request) -> Response | None:
    """A refusal for a POST without a declared length or over MAX_BODY, else None."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return None
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        return JSONResponse({"error": "a request body needs a Content-Length"}, status_code=411)
    if int(length) > MAX_BODY:
        return JSONResponse({"error": f"request body over {MAX_BODY} bytes"}, status_code=413)
    return None


def make_app(bench: Bench) -> FastAPI:
    """The app for `bench`: middleware and error pages here, the views in bench.views."""
    from rmtension.bench.views import add_views

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.bench = bench

    @app.middleware("http")
    async def guard(request: Request, call_next):
        response = _bounded(request)
        if response is None and request.url.path not in PUBLIC:
            token = request.cookies.get(COOKIE)
            reviewer = await run_in_threadpool(access.session_reviewer, bench.engine, token)
            if reviewer is None:
                response = login_page("Please sign in.", 401)
            else:
                request.state.reviewer, request.state.session = reviewer, token
        if response is None:
            response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        if request.url.path == "/judge":
            return JSONResponse({"error": str(exc)}, status_code=409)
        return page(request, "message.html", 409, title="Not possible", message=str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.get("/login")
    async def login_link(request: Request, token: str = ""):
        return await _sign_in(bench, request, token)

    @app.post("/login")
    async def login_form(request: Request):
        form = await request.form(max_files=0, max_fields=4)
        token = form.get("token")
        return await _sign_in(bench, request, token if isinstance(token, str) else "")

    @app.post("/logout")
    async def logout(request: Request):
        await posted(request)
        await run_in_threadpool(access.end_session, bench.engine, request.state.session)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    add_views(app, bench)
    return app


async def _sign_in(bench: Bench, request: Request, token: str) -> Response:
    """Exchange a login token for a session cookie, then redirect so the token leaves the URL."""
    token = token.strip()
    if not token:
        return login_page("", 200)
    session = await run_in_threadpool(access.exchange, bench.engine, token[:128])
    if session is None:
        return login_page("This login link is not valid or was used already; ask for a new one.", 403)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        session,
        max_age=access.SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response
