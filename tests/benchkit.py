"""Shared pieces of the bench tests: a free loopback port, the bench served by the real CLI in a
subprocess, a reviewer's HTTP client (login link, CSRF token from the page, judgments), a
PostgreSQL URL from $RMTENSION_TEST_PG, and small task files."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from requires import missing
from rmtension.bench.access import add_reviewer

ROOT = Path(__file__).resolve().parents[1]
PG_ENV = "RMTENSION_TEST_PG"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_task(
    path: Path, name: str, kind: str = "batch", k: int = 2, mode: str = "helpful", **source
) -> Path:
    lines = [
        f"name: {name}",
        f"mode: {mode}",
        'guideline_version: "t-1"',
        f"k: {k}",
        "guidelines: |",
        "  # How to judge",
        "  - Prefer the reply that **books the visit**.",
        "  - Never adjust `medication`.",
        "source:",
        f"  kind: {kind}",
    ]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in source.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_batch(path: Path, n: int, extra: list[dict] = ()) -> Path:
    rows = [
        {"prompt": f"question {i}?", "reply_a": f"answer a{i}", "reply_b": f"answer b{i}"} for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in list(extra) + rows))
    return path


def pg_url() -> str:
    """$RMTENSION_TEST_PG, or skip (fail under RMTENSION_REQUIRE_DATA=1)."""
    url = os.environ.get(PG_ENV)
    if not url:
        missing(
            f"no PostgreSQL server: set {PG_ENV}=postgresql://user@127.0.0.1:PORT/db (.ci/run starts one)"
        )
    return url


def fresh_pg_db(url: str) -> str:
    """The bench tables dropped, so each test starts empty on the shared test database."""
    from rmtension.bench.schema import metadata, open_engine

    engine = open_engine(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    engine.dispose()
    return url


class Server:
    """`rmtension bench serve` in a subprocess on a free loopback port."""

    def __init__(self, db: str, tasks: list[Path], log: Path, extra: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "rmtension", "bench", "serve", "--db", db, "--port", str(self.port)]
        for t in tasks:
            cmd += ["--task", str(t)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([*cmd, *extra], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.wait_ready()

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench serve exited with {self.proc.returncode}")
            try:
                requests.get(self.url + "/login", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError("bench serve did not start")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
LOGIN_CSRF = re.compile(r'name="login_csrf" value="([0-9a-f]+)"')


def login(http: requests.Session, base: str, token: str) -> requests.Response:
    """Open the login link, then post its form as the reviewer's click does."""
    page = http.get(f"{base}/login", params={"token": token}, timeout=30)
    assert page.status_code == 200, page.status_code
    form = {"token": token, "login_csrf": LOGIN_CSRF.search(page.text).group(1)}
    return http.post(f"{base}/login", data=form, timeout=30)


ITEM = re.compile(r'name="item_id" value="([^"]+)"')


class Reviewer:
    """A reviewer's browser without the browser: requests with the session cookie."""

    def __init__(self, base: str, engine, name: str, admin: bool = False):
        self.base, self.name = base, name
        self.http = requests.Session()
        r = login(self.http, base, add_reviewer(engine, name, admin))
        assert r.status_code == 200 and r.url == base + "/", (r.status_code, r.url)
        self.csrf = CSRF.search(r.text).group(1)

    def next_item(self, task: str) -> str | None:
        """The item id the batch page shows, or None when nothing is left."""
        r = self.http.get(f"{self.base}/task/{task}/next", timeout=30)
        r.raise_for_status()
        found = ITEM.search(r.text)
        return found.group(1) if found else None

    def judge(self, item_id: str, pick: str = "left", key: str | None = None, strength: int = 2) -> dict:
        form = {
            "csrf": self.csrf,
            "item_id": item_id,
            "judgment_id": key or uuid.uuid4().hex,
            "pick": pick,
            "strength": str(strength),
            "note": "",
        }
        r = self.http.post(f"{self.base}/judge", data=form, timeout=30)
        r.raise_for_status()
        return r.json()
