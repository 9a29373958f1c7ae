"""What the bench's app and views share: the served state, templates (autoescaped), page rendering
with the CSRF token, the CSRF check of posted forms, and the bounds on request bodies."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine

from rmtension.bench import access
from rmtension.bench.task import Task
from rmtension.errors import ConfigError

HERE = Path(__file__).parent
COOKIE = "bench_session"
LOGIN_COOKIE = "bench_login"
"""The login page's nonce (`access.login_csrf`): SameSite=Strict, so a cross-site post never carries it."""
NONCE_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
"""The characters of `secrets.token_urlsafe`: a login cookie of others is replaced, not reused."""
MAX_BODY = 32 * 1024
"""Bytes a POST may carry: a turn (4,000 characters), a note and the form's fields fit many times."""
PUBLIC = ("/login", "/static/login.js")
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
    secure_cookies: bool = False
    """Mark cookies Secure even when the request came over http: behind a TLS-terminating proxy."""
    origins: frozenset[str] = frozenset()
    """scheme://host[:port] addresses the bench is opened at through a proxy that rewrites Host
    (`public_origins`); the page's own host is always one."""


def public_origins(urls: list[str]) -> frozenset[str]:
    """`--origin` values -> the Origin headers a browser sends from them: scheme://host[:port] in
    lower case, the host IDNA-encoded (an IPv6 host in brackets) and a default port (443 for https,
    80 for http) left out, as browsers send it. A value without scheme and host, with a path, user,
    query or fragment, or that does not parse, is a ConfigError."""
    out = set()
    for url in urls:
        origin = _browser_origin(url)
        if origin is None:
            raise ConfigError(f"--origin {url!r}: give scheme and host only, e.g. https://bench.example.org")
        out.add(origin)
    return frozenset(out)


def _browser_origin(url: str) -> str | None:
    """The Origin header a browser sends from `url`, or None when `url` is no bare scheme://host[:port]."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port  # the port raises ValueError when it is no number
        host = host.encode("idna").decode("ascii") if host else None
    except (ValueError, UnicodeError):  # an unclosed [IPv6] bracket, a bad port, a host IDNA refuses
        return None
    bad = parts.path not in ("", "/") or parts.username or parts.query or parts.fragment
    if parts.scheme not in ("http", "https") or not host or bad:
        return None
    host = f"[{host}]" if ":" in host else host  # `hostname` drops an IPv6 host's brackets
    default = {"https": 443, "http": 80}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def secure(request: Request) -> bool:
    """Cookies get the Secure flag: served over https (uvicorn also takes X-Forwarded-Proto from a
    proxy it trusts, by default one on 127.0.0.1) or `Bench.secure_cookies`."""
    return request.url.scheme == "https" or request.app.state.bench.secure_cookies


def page(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    """Render a template for the signed-in reviewer, with the CSRF token for its forms."""
    html = templates.get_template(template).render(
        reviewer=request.state.reviewer, csrf=access.csrf_token(request.state.session), **context
    )
    return HTMLResponse(html, status_code=status)


def login_page(request: Request, message: str, status: int, token: str = "", owner: str = "") -> HTMLResponse:
    """The login form, with the browser's login nonce in a cookie (a fresh one where it has none) and
    its hash in the form; `token` and `owner`: a login link's token, posted by the reviewer's click, and
    whose account it opens. The nonce is kept across renders: a browser also fetches other pages (its
    favicon, say) that answer with this page before sign-in, and a fresh nonce there would no longer
    match the form it already shows (so the cookie's path is the whole site)."""
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not (32 <= len(nonce) <= 128 and set(nonce) <= NONCE_CHARS):
        nonce = secrets.token_urlsafe(32)
    html = templates.get_template("login.html").render(
        message=message, token=token, owner=owner, login_csrf=access.login_csrf(nonce)
    )
    response = HTMLResponse(html, status_code=status)
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=3600,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )
    return response


def same_origin(request: Request) -> bool:
    """The request does not come from another site: the browser's Sec-Fetch-Site and Origin headers,
    where sent, name this site (a non-browser client sends neither). Our pages' `Referrer-Policy:
    no-referrer` makes a browser send `Origin: null` with their own posts, so `null` is left to
    Sec-Fetch-Site and the login nonce."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin in (None, "null") or origin.lower() in request.app.state.bench.origins:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


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


def bounded(request: Request) -> Response | None:
    """A refusal for a POST without a declared length or over MAX_BODY, else None."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return None
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        return JSONResponse({"error": "a request body needs a Content-Length"}, status_code=411)
    if int(length) > MAX_BODY:
        return JSONResponse({"error": f"request body over {MAX_BODY} bytes"}, status_code=413)
    return None
