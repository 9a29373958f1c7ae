"""Reviewers, one-time login tokens, sessions and CSRF tokens. The database keeps only hashes.

A login link carries a random token; the server exchanges it once for a session cookie and
forgets it. The CSRF token of a page is a hash of the session cookie's value: a forged
cross-site post can read neither the cookie nor the page, so it cannot send the token, and
the token outlives a server restart as the session does.

Login itself is guarded the same way (against a third-party page signing a reviewer into another
account): the login page sets a random `login nonce` cookie (SameSite=Strict) and puts a hash of it
in its form (`login_csrf`), and only a POST that carries both exchanges a token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select, update

from rmtension.bench.schema import reviewers, sessions
from rmtension.errors import ConfigError

SESSION_SECONDS = 12 * 3600
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@")


@dataclass(frozen=True)
class Reviewer:
    name: str
    admin: bool


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    return hashlib.sha256(b"csrf:" + session_token.encode()).hexdigest()


def _same_text(expected: str, sent: str) -> bool:
    """Constant-time comparison of `expected` (hex) with browser-sent text, which may hold any
    characters: `hmac.compare_digest` raises TypeError on non-ASCII str, so compare UTF-8 bytes."""
    return hmac.compare_digest(expected.encode(), sent.encode("utf-8", "replace"))


def csrf_ok(session_token: str, sent: str | None) -> bool:
    return bool(sent) and _same_text(csrf_token(session_token), sent)


def login_csrf(nonce: str) -> str:
    return hashlib.sha256(b"login:" + nonce.encode()).hexdigest()


def login_csrf_ok(nonce: str | None, sent: str | None) -> bool:
    return bool(nonce) and bool(sent) and len(nonce) <= 128 and _same_text(login_csrf(nonce), sent)


def token_owner(engine: Engine, login_token: str) -> str | None:
    """The active reviewer whose unused login token this is (the token is not spent), or None."""
    if not login_token or len(login_token) > 128:
        return None
    with engine.connect() as conn:
        return conn.execute(
            select(reviewers.c.name).where(
                reviewers.c.token_hash == digest(login_token), reviewers.c.active.is_(True)
            )
        ).scalar()


def check_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= NAME_CHARS:
        raise ConfigError(f"reviewer name {name!r}: 1-64 of letters, digits, - _ . @")
    return name


def add_reviewer(engine: Engine, name: str, admin: bool = False) -> str:
    """A fresh one-time login token for `name` (created, or re-issued and re-activated)."""
    check_name(name)
    token = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        row = conn.execute(select(reviewers.c.name).where(reviewers.c.name == name)).first()
        values = dict(token_hash=digest(token), admin=admin, active=True)
        if row is None:
            conn.execute(insert(reviewers).values(name=name, created=time.time(), **values))
        else:
            conn.execute(update(reviewers).where(reviewers.c.name == name).values(**values))
    return token


def revoke(engine: Engine, name: str) -> bool:
    """End `name`'s access: unused link and every session. False when there is no such reviewer."""
    with engine.begin() as conn:
        done = conn.execute(
            update(reviewers).where(reviewers.c.name == name).values(active=False, token_hash=None)
        )
        conn.execute(delete(sessions).where(sessions.c.reviewer == name))
    return done.rowcount == 1


def exchange(engine: Engine, login_token: str) -> str | None:
    """Spend a login token; a new session token, or None when the token is unknown or used."""
    session_token = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        name = conn.execute(
            select(reviewers.c.name).where(
                reviewers.c.token_hash == digest(login_token), reviewers.c.active.is_(True)
            )
        ).scalar()
        if name is None:
            return None
        spent = conn.execute(
            update(reviewers)
            .where(reviewers.c.name == name, reviewers.c.token_hash == digest(login_token))
            .values(token_hash=None)
        )
        if spent.rowcount != 1:
            return None
        conn.execute(delete(sessions).where(sessions.c.expires < time.time()))  # expired ones go here
        conn.execute(
            insert(sessions).values(
                token_hash=digest(session_token), reviewer=name, expires=time.time() + SESSION_SECONDS
            )
        )
    return session_token


def session_reviewer(engine: Engine, session_token: str | None) -> Reviewer | None:
    """The active reviewer behind a session cookie, or None."""
    if not session_token or len(session_token) > 128:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            select(reviewers.c.name, reviewers.c.admin)
            .join(sessions, sessions.c.reviewer == reviewers.c.name)
            .where(
                sessions.c.token_hash == digest(session_token),
                sessions.c.expires > time.time(),
                reviewers.c.active.is_(True),
            )
        ).first()
    return None if row is None else Reviewer(row.name, bool(row.admin))


def end_session(engine: Engine, session_token: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(sessions).where(sessions.c.token_hash == digest(session_token)))
