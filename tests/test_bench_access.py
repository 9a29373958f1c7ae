"""The bench's sign-in and item access against `rmtension bench serve` (batch tasks, no model): a
third-party page cannot sign a reviewer into another account (in Debian's headless Chromium, the
page served from another site), the login form needs its page's nonce and this origin, the session
cookie is Secure over https and behind a TLS-terminating proxy, and an item id that does not exist
answers exactly as one assigned to someone else."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading

import pytest
import requests

from benchkit import LOGIN_CSRF, Reviewer, Server, free_port, write_batch, write_task
from browser import chromium_paths, start_chromium
from requires import missing
from rmtension.bench.access import add_reviewer, token_owner
from rmtension.bench.batch import read_jsonl
from rmtension.bench.schema import open_engine
from rmtension.bench.store import add_items, put_task
from rmtension.bench.task import load_task
from rmtension.bench.web import public_origins
from rmtension.errors import ConfigError


PUBLIC = "https://Bench.Example.org"
"""Where reviewers open the proxied bench: a proxy there forwards to it with its own Host header."""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench-access")
    task = write_task(work / "t.yaml", "t", "batch", k=1)
    db = str(work / "bench.db")
    engine = open_engine(db)
    put_task(engine, load_task(task))
    add_items(engine, read_jsonl(write_batch(work / "b.jsonl", 4), "t"))
    server = Server(db, [task], work / "serve.log")
    try:  # the same bench behind a TLS-terminating proxy elsewhere: told so by --secure-cookies
        extra = ("--secure-cookies", "--origin", PUBLIC)
        proxied = Server(db, [task], work / "proxied.log", extra=extra)
    except BaseException:
        server.stop()
        raise
    yield server, engine, proxied
    proxied.stop()
    server.stop()
    engine.dispose()


def _session_cookie_header(response: requests.Response) -> str:
    (header,) = [h for h in response.raw.headers.getlist("set-cookie") if h.startswith("bench_session=")]
    return header.lower()


def test_login_post_needs_its_pages_nonce_and_this_origin(served):
    server, engine, _ = served
    token = add_reviewer(engine, "ana")
    http = requests.Session()
    page = http.get(f"{server.url}/login", params={"token": token}, timeout=10)
    assert page.status_code == 200 and "signs you in as <strong>ana</strong>" in page.text
    assert "bench_session" not in http.cookies and token_owner(engine, token) == "ana"  # a GET spends nothing
    url = f"{server.url}/login"

    def fresh_field() -> str:  # every login page sets a new nonce cookie and carries its hash
        return LOGIN_CSRF.search(http.get(url, timeout=10).text).group(1)

    forged = [
        (requests.Session(), lambda: {"token": token}, {}),  # no nonce cookie, no field: another site's form
        (http, lambda: {"token": token, "login_csrf": "0" * 64}, {}),  # the cookie without its page's field
        (http, lambda: {"token": token, "login_csrf": "\u00e9" * 64}, {}),  # non-ASCII: a 403, not a 500
        (http, lambda: {"token": token, "login_csrf": fresh_field()}, {"Origin": "http://evil.example"}),
        (http, lambda: {"token": token, "login_csrf": fresh_field()}, {"Sec-Fetch-Site": "cross-site"}),
    ]
    for client, form, headers in forged:
        r = client.post(url, data=form(), headers=headers, allow_redirects=False, timeout=10)
        assert r.status_code == 403 and "own login page" in r.text, headers
        assert "bench_session" not in client.cookies
    assert token_owner(engine, token) == "ana"  # still unspent
    same = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    form = {"token": token, "login_csrf": fresh_field()}
    ok = http.post(url, data=form, headers=same, allow_redirects=False, timeout=10)
    assert ok.status_code == 303 and ok.headers["location"] == "/" and "bench_session" in http.cookies
    assert "secure" not in _session_cookie_header(ok).split("; ")  # plain http, no proxy: not Secure
    assert token_owner(engine, token) is None


def test_session_cookie_is_secure_behind_https(served):
    server, engine, proxied = served
    http = requests.Session()
    token = add_reviewer(engine, "bo")
    field = LOGIN_CSRF.search(http.get(f"{server.url}/login", params={"token": token}, timeout=10).text)
    # a TLS-terminating proxy on this host says https (uvicorn trusts X-Forwarded-Proto from 127.0.0.1)
    r = http.post(
        f"{server.url}/login",
        data={"token": token, "login_csrf": field.group(1)},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 303 and "secure" in _session_cookie_header(r).split("; ")
    # a proxy elsewhere: --secure-cookies marks them Secure although the bench speaks http
    token = add_reviewer(engine, "cid")
    page = requests.get(f"{proxied.url}/login", params={"token": token}, timeout=10)
    (nonce,) = [h for h in page.raw.headers.getlist("set-cookie") if h.startswith("bench_login=")]
    assert "secure" in nonce.lower().split("; ")  # so a client on plain http would not send it back
    form = {"token": token, "login_csrf": LOGIN_CSRF.search(page.text).group(1)}
    cookie = {"Cookie": nonce.split(";")[0]}  # as the browser behind the proxy, over https, would
    r = requests.post(f"{proxied.url}/login", data=form, headers=cookie, allow_redirects=False, timeout=10)
    assert r.status_code == 303 and "secure" in _session_cookie_header(r).split("; ")


def test_a_login_through_a_proxy_that_rewrites_host_needs_a_declared_origin(served):
    """Behind a proxy the browser's Origin names the public address while Host names the bench's
    own; `--origin` declares that address, and every other origin is still refused."""
    server, engine, proxied = served
    for bench, origin, status in (
        (proxied, "https://bench.example.org", 303),  # the declared one (case does not matter)
        (proxied, "https://evil.example.org", 403),
        (proxied, "http://bench.example.org", 403),  # another scheme is another origin
        (server, "https://bench.example.org", 403),  # declared on the other server only
    ):
        token = add_reviewer(engine, f"px{status}{len(origin)}{bench is server}")
        http = requests.Session()
        page = http.get(f"{bench.url}/login", params={"token": token}, timeout=10)
        (nonce,) = [h for h in page.raw.headers.getlist("set-cookie") if h.startswith("bench_login=")]
        headers = {"Origin": origin, "Sec-Fetch-Site": "same-origin", "Cookie": nonce.split(";")[0]}
        form = {"token": token, "login_csrf": LOGIN_CSRF.search(page.text).group(1)}
        r = requests.post(f"{bench.url}/login", data=form, headers=headers, allow_redirects=False, timeout=10)
        assert r.status_code == status, (origin, r.text[:200])


def test_a_malformed_origin_stops_serve_with_one_line(tmp_path):
    task = write_task(tmp_path / "t.yaml", "t", "batch", k=1)
    for origin in ("bench.example.org", "https://bench.example.org/judge", "ftp://bench.example.org"):
        cmd = [sys.executable, "-m", "rmtension", "bench", "serve", "--db", str(tmp_path / "b.db")]
        run = subprocess.run([*cmd, "--task", str(task), "--origin", origin], capture_output=True, text=True)
        lines = run.stderr.strip().splitlines()
        assert run.returncode != 0 and len(lines) == 1 and "--origin" in lines[0], run.stderr
        assert "Traceback" not in run.stderr + run.stdout
    assert public_origins(["HTTPS://Bench.Example.org:8443/"]) == {"https://bench.example.org:8443"}
    # as a browser writes its Origin: the default port left out, a Unicode host in punycode
    assert public_origins(["https://bench.example.org:443", "http://bench.example.org:80"]) == {
        "https://bench.example.org",
        "http://bench.example.org",
    }
    assert public_origins(["https://bücher.example"]) == {"https://xn--bcher-kva.example"}
    assert public_origins(["https://[::1]:8443"]) == {"https://[::1]:8443"}  # IPv6 keeps its brackets
    for bad in (
        "https://u:p@bench.example.org",
        "https://bench.example.org/?a=1",
        "https://bench.example.org:x",
        "http://[::1",  # does not parse: a ConfigError, not a traceback
    ):
        with pytest.raises(ConfigError, match="--origin"):
            public_origins([bad])


def test_an_unknown_item_answers_as_one_assigned_to_someone_else(served):
    server, engine, _ = served
    owner, probe = Reviewer(server.url, engine, "owner"), Reviewer(server.url, engine, "probe")
    item = owner.next_item("t")  # now assigned to `owner` only (k=1)
    assert item
    answers = []
    for item_id in (item, "t:no-such-item"):
        key = f"probe-{len(answers)}-key"
        form = {"csrf": probe.csrf, "item_id": item_id, "judgment_id": key, "pick": "left", "strength": "2"}
        judged = probe.http.post(f"{server.url}/judge", data=form, timeout=10)
        streamed = probe.http.get(f"{server.url}/items/{item_id}/stream", timeout=10)
        answers.append([(r.status_code, r.headers["content-type"], r.text) for r in (judged, streamed)])
    assert answers[0] == answers[1], answers
    assert answers[0][0][0] == 409
    assert owner.judge(item, "left")["ok"]  # the owner can judge it: the item does exist


class _ThirdParty(http.server.BaseHTTPRequestHandler):
    page = b""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args):
        pass


def test_a_third_party_page_cannot_sign_a_reviewer_into_another_account(served):
    """Login CSRF: mallory's page posts mallory's token to the bench from the victim's browser, or
    sends the browser to mallory's login link; neither leaves the browser signed in as mallory."""
    browser, driver_path = chromium_paths()
    if browser is None or driver_path is None:
        missing("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, engine, _ = served
    token = add_reviewer(engine, "mallory")
    _ThirdParty.page = (
        f'<form method="post" action="{server.url}/login"><input name="token" value="{token}">'
        "</form><script>document.forms[0].submit()</script>"
    ).encode()
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _ThirdParty)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    driver, profile = start_chromium()
    try:
        driver.get(f"http://localhost:{evil.server_address[1]}/")  # another site than 127.0.0.1
        WebDriverWait(driver, 30).until(lambda d: d.current_url.startswith(server.url))
        assert "own login page" in driver.find_element(By.TAG_NAME, "body").text
        assert driver.get_cookie("bench_session") is None and token_owner(engine, token) == "mallory"

        driver.get(f"{server.url}/login?token={token}")  # a link alone signs no one in
        WebDriverWait(driver, 30).until(lambda d: d.current_url == server.url + "/login")
        assert "signs you in as mallory" in driver.find_element(By.TAG_NAME, "body").text
        assert driver.get_cookie("bench_session") is None and token_owner(engine, token) == "mallory"
        driver.find_element(By.ID, "sign-in").click()  # the reviewer's own click on our page does
        try:
            WebDriverWait(driver, 90).until(lambda d: d.current_url == server.url + "/")
        except TimeoutException:  # the page is read only now: during the click's navigation it goes stale
            body = driver.find_element(By.TAG_NAME, "body").text[:200]
            raise AssertionError(f"not signed in: {driver.current_url} {body}") from None
        assert driver.get_cookie("bench_session") is not None and token_owner(engine, token) is None
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        evil.shutdown()
