"""The bench's web app: access control, security headers, login and logout; the pages are in bench.views.

Nothing but `/login` (and its script) answers without a valid session cookie. A login link only
shows the login form; the reviewer's click posts the token, with the login page's nonce
(`bench.access`) and from this site (`same_origin`). Every POST carries the page's CSRF token and a
declared, bounded body. Pages are Jinja2 templates with autoescaping on; model and
reviewer text reach the page only as escaped text or, from the page script, as text nodes; a
Content-Security-Policy allows no inline script at all.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from rmtension.bench import access
from rmtension.bench.store import Refused
from rmtension.bench.views import add_views
from rmtension.bench.web import (
    COOKIE,
    LOGIN_COOKIE,
    PUBLIC,
    SECURITY_HEADERS,
    Bench,
    bounded,
    login_page,
    page,
    posted,
    same_origin,
    secure,
)

INVALID_LINK = "This login link is not valid or was used already; ask for a new one."


def make_app(bench: Bench) -> FastAPI:
    """The app for `bench`: middleware and error pages here, the views in bench.views."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.bench = bench

    @app.middleware("http")
    async def guard(request: Request, call_next):
        response = bounded(request)
        if response is None and request.url.path not in PUBLIC:
            token = request.cookies.get(COOKIE)
            reviewer = await run_in_threadpool(access.session_reviewer, bench.engine, token)
            if reviewer is None:
                response = login_page(request, "Please sign in.", 401)
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
        """A login link shows whose account it opens; only the reviewer's click (a POST) signs in."""
        token = token.strip()
        if not token:
            return login_page(request, "", 200)
        owner = await run_in_threadpool(access.token_owner, bench.engine, token)
        if owner is None:
            return login_page(request, INVALID_LINK, 403)
        return login_page(request, "", 200, token=token, owner=owner)

    @app.post("/login")
    async def login_form(request: Request):
        form = await request.form(max_files=0, max_fields=4)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not same_origin(request) or not access.login_csrf_ok(nonce, fields.get("login_csrf")):
            return login_page(request, "Sign in from the bench's own login page.", 403)
        return await _sign_in(bench, request, fields.get("token", ""))

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
    """Exchange a login token for a session cookie, then redirect to the bench."""
    token = token.strip()
    if not token:
        return login_page(request, "", 200)
    session = await run_in_threadpool(access.exchange, bench.engine, token[:128])
    if session is None:
        return login_page(request, INVALID_LINK, 403)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    response.set_cookie(
        COOKIE,
        session,
        max_age=access.SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure(request),
    )
    return response
