"""The bench in Debian's headless Chromium against `rmtension bench serve` on a free loopback port.

A reviewer logs in with a one-time link, sends a turn to a tiny random Llama policy (an HF folder,
two samples streamed over server-sent events), picks B with the keyboard, and the conversation
goes on with B; the stored judgment and the export say B. Batch items whose replies are HTML
attacks show verbatim as text and run nothing. Without a session every page but the login page
refuses; a post without the CSRF token is refused. The judging page's screenshot is kept
(`$RMTENSION_SMOKE_DIR/bench-screenshot.png`, else the test's folder).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import requests
import yaml

from benchkit import CSRF, ROOT, ITEM as ITEM_ID, Reviewer, Server, write_task
from browser import blankness, chromium_paths, start_chromium
from requires import missing
from rmtension.bench.access import add_reviewer, revoke
from rmtension.bench.batch import read_jsonl
from rmtension.bench.export import export_pairs, write_jsonl
from rmtension.bench.live import get_conversation
from rmtension.bench.schema import open_engine
from rmtension.bench.store import add_items, load_items, load_judgments, put_task
from rmtension.bench.task import load_task
from test_bench_train import export_in_training
from tiny import save_tiny

SCRIPT = "<script>window.__x=1</script>"
IMG = '<img src=x onerror="window.__x=1">'
CLINIC = [
    {
        "prompt": "Can you move my check-up with Dr. Osei to Friday morning? And should I take two of my "
        "blood-pressure pills today since I missed yesterday's?",
        "reply_a": "I can move it: Friday 9:30 with Dr. Osei is free, shall I book it?\n\nAbout the pills: "
        "I can't advise on doses. Please call the clinic's nurse line or your pharmacist before taking extra.",
        "reply_b": "Done, you are booked for Friday. Yes, taking two today is fine to catch up.",
        "id": "clinic-1",
    }
]


def _shipped_task_as_batch(path: Path, name: str) -> Path:
    """The shipped healthcare-scheduling task (its real guidelines), judged as batch items with k=1."""
    raw = yaml.safe_load((ROOT / "tasks" / "healthcare_scheduling.yaml").read_text())
    raw.update(name=name, k=1, source={"kind": "batch"})
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    browser, driver = chromium_paths()
    if browser is None or driver is None:
        missing("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    work = tmp_path_factory.mktemp("bench-browser")
    policy = save_tiny(work / "policy", "llama", causal=True)
    chat = write_task(
        work / "chat.yaml",
        "chat",
        "live",
        policies=[str(policy)],
        max_new_tokens=24,
        temperature=1.0,
        top_p=1.0,
    )
    xss = write_task(work / "xss.yaml", "xss", "batch", k=1)
    clinic = _shipped_task_as_batch(work / "clinic.yaml", "clinic")
    admin_task = _shipped_task_as_batch(work / "admin.yaml", "admin")
    db = str(work / "bench.db")
    engine = open_engine(db)
    rows = [{"prompt": f"<b>{SCRIPT}</b>", "reply_a": SCRIPT, "reply_b": IMG, "id": "xss-1"}]
    for name, task_file, items in (
        ("xss", xss, rows),
        ("clinic", clinic, CLINIC),
        ("admin", admin_task, CLINIC),
    ):
        put_task(engine, load_task(task_file))
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
        add_items(engine, read_jsonl(work / f"{name}.jsonl", name))
    server = Server(db, [chat, xss, clinic, admin_task], work / "serve.log")
    yield server, engine, work
    server.stop()
    engine.dispose()


@pytest.fixture(scope="module")
def driver(bench):
    drv, profile = start_chromium()
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def visible(text: str) -> str:
    """The printable, non-space characters: the tiny random model writes control bytes and spaces
    that the page's HTML parsing and whitespace handling may change, but never these."""
    return "".join(c for c in text if c.isprintable() and not c.isspace())


def _wait(driver, condition, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _login(driver, server, engine, name):
    from selenium.webdriver.common.by import By

    driver.get(f"{server.url}/login?token={add_reviewer(engine, name)}")
    _wait(driver, lambda d: d.current_url == server.url + "/login")  # the token left the URL
    assert f"signs you in as {name}" in driver.find_element(By.TAG_NAME, "body").text
    driver.find_element(By.ID, "sign-in").click()
    _wait(driver, lambda d: d.current_url == server.url + "/")
    cookie = driver.get_cookie("bench_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert driver.execute_script("return document.cookie") == ""  # out of the page script's reach


def _screenshot_dir(work: Path) -> Path:
    out = Path(os.environ.get("RMTENSION_SMOKE_DIR") or work)
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_live_turn_streams_two_replies_and_b_by_keyboard_continues(bench, driver):
    from selenium.webdriver.common.by import By

    server, engine, work = bench
    _login(driver, server, engine, "ana")
    driver.find_element(By.CSS_SELECTOR, "form[action='/chat/new'] button").click()
    _wait(driver, lambda d: "/chat/" in d.current_url)
    conv_id = driver.current_url.rsplit("/", 1)[1]
    driver.find_element(By.ID, "turn-text").send_keys("Please book me a dentist visit on Monday.")
    driver.find_element(By.CSS_SELECTOR, "#turnform button").click()
    ready = (
        "return document.getElementById('work') && document.getElementById('work').dataset.state === 'ready'"
    )
    _wait(driver, lambda d: d.execute_script(ready))
    left, right = (
        visible(driver.execute_script(f"return document.getElementById('reply-{s}').textContent"))
        for s in ("left", "right")
    )
    pieces = driver.execute_script(
        "return ['reply-left', 'reply-right'].map(i => document.getElementById(i).childNodes.length)"
    )
    assert min(pieces) > 1, pieces  # each reply arrived as several streamed deltas, not in one piece
    (_screenshot_dir(work) / "bench-chat-screenshot.png").write_bytes(driver.get_screenshot_as_png())
    assert driver.find_element(By.CSS_SELECTOR, "button[value='right']").is_enabled()

    driver.find_element(By.TAG_NAME, "body").send_keys("b")
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".turn.assistant")) == 1)
    shown = driver.execute_script("return document.querySelector('.turn.assistant .text').textContent")
    assert visible(shown) == right  # the conversation continues with B
    assert driver.find_element(By.ID, "turn-text")  # and waits for the next turn

    (judgment,) = load_judgments(engine, "chat")
    assert judgment.reviewer == "ana" and judgment.preferred == 1 - judgment.left  # B: the right-hand reply
    (item,) = load_items(engine, "chat")
    picked = item.reply_1 if judgment.preferred == 1 else item.reply_0
    conv = get_conversation(engine, conv_id, "ana")
    assert conv.turns[-1].content == picked and visible(picked) == right and left
    assert item.source_0["model"] == item.source_1["model"] and item.source_0["row"] != item.source_1["row"]
    rows, summary = export_pairs([item], [judgment], fmt="trl", aggregate="all")
    assert summary.pairs == 1 and rows[0]["chosen"][-1]["content"] == picked
    # the study takes that export as training pairs of the helpful objective (tests/test_bench_train.py)
    write_jsonl(rows, work / "export.jsonl")
    found = export_in_training(work / "export.jsonl", work / "study", fmt="jsonl")
    assert len(found["helpful"]["train"]) == len(found["mixed"]["train"]) == 1


def test_judging_page_shows_html_from_replies_as_text(bench, driver):
    from selenium.webdriver.common.by import By

    server, engine, work = bench
    _login(driver, server, engine, "ben")
    driver.get(f"{server.url}/task/xss/next")
    _wait(
        driver, lambda d: d.execute_script("return document.getElementById('work').dataset.state") == "ready"
    )
    texts = {driver.find_element(By.ID, f"reply-{s}").text for s in ("left", "right")}
    assert texts == {SCRIPT, IMG}
    assert driver.find_element(By.CSS_SELECTOR, ".turn.user .text").text == f"<b>{SCRIPT}</b>"
    assert driver.find_elements(By.CSS_SELECTOR, "main img, main b, .card script") == []
    assert driver.execute_script("return typeof window.__x") == "undefined"

    driver.get(f"{server.url}/task/clinic/next")
    _wait(
        driver, lambda d: d.execute_script("return document.getElementById('work').dataset.state") == "ready"
    )
    png = driver.get_screenshot_as_png()
    (_screenshot_dir(work) / "bench-screenshot.png").write_bytes(png)
    stats = blankness(png)
    assert stats["colours"] > 64 and stats["non_white"] > 0.05, stats
    driver.find_element(By.TAG_NAME, "body").send_keys("a")
    _wait(driver, lambda d: "Nothing left" in d.page_source)
    assert [j.task for j in load_judgments(engine, "clinic")] == ["clinic"]


def test_no_session_no_page_and_no_post_without_csrf(bench):
    server, engine, _ = bench
    anon = requests.Session()
    for path in ("/", "/task/xss/next", "/chat/abc", "/items/x/stream", "/admin/stats", "/static/bench.js"):
        r = anon.get(server.url + path, timeout=10)
        assert r.status_code == 401 and "sign in" in r.text.lower(), path
    assert anon.post(server.url + "/judge", data={"pick": "left"}, timeout=10).status_code == 401
    assert anon.get(server.url + "/login", timeout=10).status_code == 200
    assert anon.get(server.url + "/login?token=forged", timeout=10).status_code == 403

    rv = Reviewer(server.url, engine, "cy")
    item = rv.next_item("clinic") or "clinic:clinic-1"
    form = {"item_id": item, "judgment_id": "k" * 16, "pick": "left", "strength": "2"}
    assert rv.http.post(server.url + "/judge", data=form, timeout=10).status_code == 403
    assert rv.http.post(server.url + "/judge", data={**form, "csrf": "0" * 64}, timeout=10).status_code == 403
    big = {**form, "csrf": rv.csrf, "note": "x" * 40_000}
    assert rv.http.post(server.url + "/judge", data=big, timeout=10).status_code == 413
    long_note = {**form, "csrf": rv.csrf, "note": "x" * 2001}
    assert rv.http.post(server.url + "/judge", data=long_note, timeout=10).status_code == 400
    assert "k" * 16 not in {j.judgment_id for j in load_judgments(engine)}
    chunked = rv.http.post(server.url + "/judge", data=iter([b"csrf=", rv.csrf.encode()]), timeout=10)
    assert chunked.status_code == 411  # no declared length, no body
    assert rv.http.get(server.url + "/admin/stats", timeout=10).status_code == 403  # not an admin
    assert rv.http.get(server.url + "/admin/export?task=clinic", timeout=10).status_code == 403
    revoke(engine, "cy")
    assert rv.http.get(server.url + "/", timeout=10).status_code == 401

    eli = Reviewer(server.url, engine, "eli")
    eli.judge(eli.next_item("admin"), "left")
    old_cookie = eli.http.cookies["bench_session"]
    out = eli.http.post(server.url + "/logout", data={"csrf": eli.csrf}, timeout=10)
    assert out.url == server.url + "/login" and "bench_session" not in eli.http.cookies
    replay = requests.get(server.url + "/", cookies={"bench_session": old_cookie}, timeout=10)
    assert replay.status_code == 401  # the session ended on the server, not only in the browser
    admin = Reviewer(server.url, engine, "boss", admin=True)
    page = admin.http.get(server.url + "/admin/stats", timeout=30)
    assert page.status_code == 200 and "nominal alpha" in page.text and CSRF.search(page.text)
    download = admin.http.get(server.url + "/admin/export?task=admin&format=trl&aggregate=all", timeout=30)
    (row,) = [json.loads(line) for line in download.text.splitlines()]
    (judged,) = load_judgments(engine, "admin")
    shown_left = (CLINIC[0]["reply_a"], CLINIC[0]["reply_b"])[judged.left]
    assert row["chosen"][0]["content"] == shown_left  # eli picked the reply shown on the left
    assert "personal" in download.headers["x-bench-warning"]
    assert "exported 1 pairs" in download.headers["x-bench-export"]


def _sse(http, url) -> list[tuple[str, dict]]:
    events, name = [], None
    with http.get(url, stream=True, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def test_live_flow_after_tie_and_both_bad(bench):
    """Over HTTP: a tie, then the reviewer names the reply that continues; both bad, then two new
    replies to the same turn; a pick; a turn over the length bound is refused; the conversation ends."""
    server, engine, _ = bench
    rv = Reviewer(server.url, engine, "dee")
    post = lambda path, **form: rv.http.post(server.url + path, data={"csrf": rv.csrf, **form}, timeout=60)
    conv_url = post("/chat/new", task="chat").url
    conv_id = conv_url.rsplit("/", 1)[1]

    def turn_and_replies(text=None) -> tuple[str, dict]:
        if text is not None:
            assert post(f"/chat/{conv_id}/turn", text=text).status_code == 200
        item = ITEM_ID.search(rv.http.get(conv_url, timeout=30).text).group(1)
        events = _sse(rv.http, f"{server.url}/items/{item}/stream")
        assert events[-1][0] == "done"
        sides = {
            s: "".join(d["text"] for n, d in events if n == "delta" and d["side"] == s)
            for s in ("left", "right")
        }
        return item, sides

    item, sides = turn_and_replies("Can I see Dr. Ray on Tuesday?")
    assert rv.judge(item, "tie")["preferred"] is None
    assert post(f"/chat/{conv_id}/turn", text="too early").status_code == 409  # a reply must continue first
    assert post(f"/chat/{conv_id}/continue", item_id=item, side="left").status_code == 200
    turns = get_conversation(engine, conv_id, "dee").turns
    assert [t.role for t in turns] == ["user", "assistant"] and turns[1].content.strip() == sides[
        "left"
    ].strip()

    item, _ = turn_and_replies("And on Wednesday?")
    rv.judge(item, "both_bad")
    assert post(f"/chat/{conv_id}/again").status_code == 200
    item2, sides2 = turn_and_replies()
    assert item2 != item and rv.judge(item2, "left")["preferred"] is not None
    turns = get_conversation(engine, conv_id, "dee").turns
    assert [t.content for t in turns[2:]] == ["And on Wednesday?", turns[3].content]
    assert turns[3].content.strip() == sides2["left"].strip()

    assert post(f"/chat/{conv_id}/turn", text="x" * 4001).status_code == 409
    assert post(f"/chat/{conv_id}/end").url == server.url + "/"
    assert post(f"/chat/{conv_id}/turn", text="hello?").status_code == 409
    picks = [
        (j.item_id, j.preferred is None, j.both_bad)
        for j in load_judgments(engine, "chat")
        if j.reviewer == "dee"
    ]
    assert sorted(picks) == sorted([(item, True, True), (item2, False, False), (picks[0][0], True, False)])
