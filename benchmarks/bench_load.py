"""The comparison bench under load: judgments per second and submit latency, SQLite vs PostgreSQL.

32 simulated reviewers (threads, one HTTP session each) run bounded loops of fetch-next-item and
submit against `rmtension bench serve` on 127.0.0.1, on batch items (no model), until every item
has k judgments. Submit latency is the time from sending a judgment to its acknowledgement
(after the commit). Run both back ends in one process; PostgreSQL from $RMTENSION_TEST_PG
(`. .ci/postgres.sh` starts a throwaway cluster) or --pg.

    python benchmarks/bench_load.py [--items 200] [--k 2] [--reviewers 32] [--pg postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import requests

from rmtension.bench.access import add_reviewer
from rmtension.bench.batch import read_jsonl
from rmtension.bench.schema import metadata, open_engine
from rmtension.bench.store import add_items, load_judgments, put_task
from rmtension.bench.task import load_task

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
LOGIN_CSRF = re.compile(r'name="login_csrf" value="([0-9a-f]+)"')
ITEM = re.compile(r'name="item_id" value="([^"]+)"')
TASK = """name: load
mode: helpful
guideline_version: "1"
k: {k}
guidelines: "Pick the better reply."
source:
  kind: batch
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(db: str, work: Path, n_items: int, k: int) -> Path:
    """Empty bench tables, the task and n_items batch items."""
    engine = open_engine(db)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    task_file = work / "load.yaml"
    task_file.write_text(TASK.format(k=k))
    put_task(engine, load_task(task_file))
    batch = work / "items.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"prompt": f"q{i}", "reply_a": "a", "reply_b": "b"}) + "\n" for i in range(n_items)
        )
    )
    add_items(engine, read_jsonl(batch, "load"))
    engine.dispose()
    return task_file


def serve(db: str, task_file: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "rmtension",
        "bench",
        "serve",
        "--db",
        db,
        "--task",
        str(task_file),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            requests.get(url + "/login", timeout=1)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def reviewer_loop(url: str, token: str, max_items: int, latencies: list[float]) -> None:
    http = requests.Session()
    link = http.get(f"{url}/login", params={"token": token}, timeout=30)  # shows the form; a click signs in
    form = {"token": token, "login_csrf": LOGIN_CSRF.search(link.text).group(1)}
    page = http.post(f"{url}/login", data=form, timeout=30)
    csrf = CSRF.search(page.text).group(1)
    for _ in range(max_items):
        found = ITEM.search(http.get(f"{url}/task/load/next", timeout=60).text)
        if found is None:
            return
        form = {
            "csrf": csrf,
            "item_id": found.group(1),
            "judgment_id": uuid.uuid4().hex,
            "pick": "left",
            "strength": "2",
        }
        t0 = time.perf_counter()
        http.post(f"{url}/judge", data=form, timeout=60).raise_for_status()
        latencies.append(time.perf_counter() - t0)


def run(name: str, db: str, args, work: Path) -> dict:
    task_file = prepare(db, work, args.items, args.k)
    engine = open_engine(db)
    tokens = [add_reviewer(engine, f"r{i}") for i in range(args.reviewers)]
    proc, url = serve(db, task_file, work / f"{name}.log")
    latencies: list[float] = []
    threads = [threading.Thread(target=reviewer_loop, args=(url, t, args.items, latencies)) for t in tokens]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    proc.terminate()
    proc.wait(10)
    stored = len(load_judgments(engine, "load"))
    engine.dispose()
    assert stored == args.items * args.k == len(latencies), (stored, len(latencies))
    lat = np.array(latencies) * 1000
    out = dict(
        judgments=stored,
        seconds=wall,
        per_s=stored / wall,
        p50=np.percentile(lat, 50),
        p95=np.percentile(lat, 95),
    )
    print(
        f"{name}: {stored} judgments by {args.reviewers} reviewers in {wall:.1f} s: {out['per_s']:.1f} judgments/s "
        f"(incl. fetching each item), submit latency p50 {out['p50']:.0f} ms, p95 {out['p95']:.0f} ms",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--reviewers", type=int, default=32)
    parser.add_argument("--pg", default=os.environ.get("RMTENSION_TEST_PG"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        work = Path(tmp)
        print(
            f"{args.reviewers} reviewers, {args.items} items, k={args.k}; server and clients on this machine ({os.cpu_count()} CPUs)"
        )
        sqlite = run("sqlite", str(work / "bench.db"), args, work)
        if not args.pg:
            print(
                "postgresql: skipped (no server: set RMTENSION_TEST_PG or --pg; `. .ci/postgres.sh` starts one)"
            )
            return
        pg = run("postgresql", args.pg, args, work)
    print(f"ratio postgresql_vs_sqlite_throughput: {pg['per_s'] / sqlite['per_s']:.2f}")
    print(f"ratio postgresql_vs_sqlite_p95_submit: {pg['p95'] / sqlite['p95']:.2f}")


if __name__ == "__main__":
    main()
