"""The bench's web app: access control, security headers, login and logout; the pages are in bench.views.

Nothing but `/login` answers without a valid session cookie. Every POST carries the page's CSRF
token and a declared, bounded body. Pages are Jinja2 templates with autoescaping on; model and
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
from rmtension.bench.web import COOKIE, PUBLIC, SECURITY_HEADERS, Bench, bounded, login_page, page, posted


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
