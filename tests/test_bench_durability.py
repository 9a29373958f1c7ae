"""Judgments survive a killed server: reviewers submit to `rmtension bench serve` (SQLite WAL)
and, after at least 20 acknowledged judgments, the server is SIGKILLed at a random moment and
restarted, three times. Submissions that saw no answer are retried with their idempotency key.
In the end every acknowledged judgment is stored exactly once, none is half-written (each
judgment closed its assignment in the same transaction, and no assignment is closed without
one), and the export's judgments are exactly the acknowledged ones."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter

import requests
from sqlalchemy import select

from benchkit import Reviewer, Server, write_batch, write_task
from rmtension.bench.batch import read_jsonl
from rmtension.bench.schema import assignments, judgments, open_engine
from rmtension.bench.store import add_items, load_judgments, put_task
from rmtension.bench.task import load_task

N_CLIENTS, N_ITEMS, KILLS = 4, 400, 3


class Clients:
    """Reviewers submitting in threads; a submit without an answer is retried with the same key."""

    def __init__(self, url: str, engine, rng: random.Random):
        self.url, self.rng = url, rng
        self.reviewers = [Reviewer(url, engine, f"dur{i}") for i in range(N_CLIENTS)]
        self.acked: list[str] = []
        self.errors: list[str] = []
        self.lock, self.stop, self.up = threading.Lock(), threading.Event(), threading.Event()
        self.up.set()

    def _submit(self, rv: Reviewer, item: str, key: str) -> None:
        while True:
            self.up.wait()
            rv.base = self.url
            try:
                rv.judge(item, self.rng.choice(("left", "right", "tie", "both_bad")), key=key)
                with self.lock:
                    self.acked.append(key)
                return
            except requests.HTTPError:
                raise
            except requests.RequestException:  # refused, reset or cut mid-answer by the kill
                time.sleep(0.05)  # same key again once the server is back

    def work(self, rv: Reviewer) -> None:
        try:
            self._loop(rv)
        except Exception as e:  # reported by the test: a client that dies must fail it
            self.errors.append(repr(e))

    def _loop(self, rv: Reviewer) -> None:
        while not self.stop.is_set():
            self.up.wait()
            rv.base = self.url
            try:
                item = rv.next_item("dur")
            except requests.HTTPError:
                raise
            except requests.RequestException:
                time.sleep(0.05)
                continue
            if item is None:
                return
            self._submit(rv, item, uuid.uuid4().hex)

    def wait_for(self, n: int) -> None:
        deadline = time.monotonic() + 120
        while len(self.acked) < n:
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.005)


def test_acknowledged_judgments_survive_sigkill(tmp_path):
    rng = random.Random(28)
    db = str(tmp_path / "bench.db")
    task_file = write_task(tmp_path / "dur.yaml", "dur", "batch", k=1)
    engine = open_engine(db)
    put_task(engine, load_task(task_file))
    add_items(engine, read_jsonl(write_batch(tmp_path / "b.jsonl", N_ITEMS), "dur"))
    log = tmp_path / "serve.log"
    server = Server(db, [task_file], log)
    clients = Clients(server.url, engine, rng)
    threads = [threading.Thread(target=clients.work, args=(rv,)) for rv in clients.reviewers]
    for t in threads:
        t.start()
    try:
        for round_ in range(KILLS):
            clients.wait_for(len(clients.acked) + 20 + rng.randint(0, 10))
            time.sleep(rng.uniform(0, 0.05))  # a random moment, often mid-request
            clients.up.clear()
            server.kill()
            server = Server(db, [task_file], log)
            clients.url = server.url
            clients.up.set()
        clients.wait_for(len(clients.acked) + 5)
        clients.stop.set()
        for t in threads:
            t.join(60)
    finally:
        clients.stop.set()
        clients.up.set()
        server.stop()
    assert clients.errors == []
    assert len(clients.acked) >= KILLS * 20
    stored = load_judgments(engine, "dur")
    keys = Counter(j.judgment_id for j in stored)
    assert set(clients.acked) <= set(keys)  # every acknowledged judgment is there
    assert max(keys.values()) == 1 and len(set(clients.acked)) == len(clients.acked)
    assert len(stored) - len(set(clients.acked)) <= N_CLIENTS  # at most the in-flight ones beyond the acked
    with engine.connect() as conn:
        done = {r.item_id for r in conn.execute(select(assignments).where(assignments.c.done.is_(True)))}
        rows = conn.execute(select(judgments)).all()
    assert done == {j.item_id for j in stored}  # judgment and closed assignment: both or neither
    for r in rows:  # whole rows only
        assert r.preferred in (0, 1, None) and r.left in (0, 1) and r.guideline_version == "t-1"
        assert (r.strength == 0) == (r.preferred is None) and not (r.both_bad and r.preferred is not None)
