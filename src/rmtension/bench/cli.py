"""`rmtension bench ...`: serve the comparison bench, manage reviewers, load batch items.

The statistics and export commands join this same sub-app (`app`)."""

from __future__ import annotations

from pathlib import Path

import typer

from rmtension.errors import ConfigError

app = typer.Typer(help="The comparison bench: reviewers pick between two replies.", no_args_is_help=True)

DB_HELP = "Database: a SQLite file path (default bench.db) or a postgresql://user:pass@host/db URL."
DbOption = typer.Option("bench.db", "--db", help=DB_HELP, envvar="RMTENSION_BENCH_DB")


def _engine(db: str):
    from rmtension.bench.schema import open_engine

    try:
        return open_engine(db)
    except ConfigError:
        raise
    except Exception as e:  # a bad URL, an unreachable server, a locked file
        raise ConfigError(
            f"--db: cannot open the database ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        )


@app.command()
def serve(
    task: list[Path] = typer.Option(..., "--task", "-t", help="Task YAML; repeat for several tasks."),
    db: str = DbOption,
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (loopback unless told otherwise)."),
    port: int = typer.Option(8000, help="Port."),
    cache_dir: str = typer.Option(None, "--cache-dir", help="Model cache for packaged policies."),
    secure_cookies: bool = typer.Option(
        False,
        "--secure-cookies",
        help="Mark cookies Secure although the bench itself speaks http: for a TLS-terminating proxy "
        "in front of it (over https they are Secure anyway).",
    ),
    origin: list[str] = typer.Option(
        [],
        "--origin",
        help="An address reviewers open the bench at, e.g. https://bench.example.org, where a proxy in "
        "front rewrites the Host header; the browser's Origin must then be one of these or this host.",
    ),
) -> None:
    """Serve the bench until interrupted."""
    import uvicorn

    from rmtension.bench.app import Bench, make_app
    from rmtension.bench.web import public_origins
    from rmtension.bench.live import reset_interrupted
    from rmtension.bench.store import put_task
    from rmtension.bench.task import load_task

    origins = public_origins(origin)
    tasks = {t.name: t for t in (load_task(p) for p in task)}
    engine = _engine(db)
    reset_interrupted(engine)
    replies = {}
    for t in tasks.values():
        put_task(engine, t)
        if t.source.kind == "live":
            from rmtension.bench.replies import PolicyReplies  # torch and the model: live tasks only

            replies[t.name] = PolicyReplies(t.source, cache_dir)
            replies[t.name].policies()  # load now: the first reviewer should not wait for it
    print(f"bench: serving {', '.join(tasks)} on http://{host}:{port}/", flush=True)
    bench = Bench(engine, tasks, replies, secure_cookies=secure_cookies, origins=origins)
    uvicorn.run(make_app(bench), host=host, port=port, log_level="warning")


@app.command("add-reviewer")
def add_reviewer_cmd(
    name: str = typer.Argument(..., help="Reviewer name (letters, digits, - _ . @)."),
    db: str = DbOption,
    admin: bool = typer.Option(False, "--admin", help="May open the statistics page."),
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="Where the bench is served."),
) -> None:
    """Print a one-time login link for NAME (a new link for an existing reviewer; the old one dies)."""
    from rmtension.bench.access import add_reviewer

    token = add_reviewer(_engine(db), name, admin)
    print(f"{url.rstrip('/')}/login?token={token}")


@app.command()
def revoke(name: str = typer.Argument(...), db: str = DbOption) -> None:
    """End NAME's access: the unused link and every session. Their judgments stay (see `bench delete`)."""
    from rmtension.bench.access import revoke as revoke_reviewer

    if not revoke_reviewer(_engine(db), name):
        raise ConfigError(f"no reviewer named {name!r}")
    print(f"revoked {name}")


@app.command("load-batch")
def load_batch(
    task: Path = typer.Option(..., "--task", "-t", help="Task YAML (source.kind: batch)."),
    path: str = typer.Argument(None, help="JSONL or run directory (default: the task's source.path)."),
    db: str = DbOption,
) -> None:
    """Add batch items for reviewers to judge (items already loaded are skipped)."""
    from rmtension.bench.batch import read_batch
    from rmtension.bench.store import add_items, put_task
    from rmtension.bench.task import load_task

    spec = load_task(task)
    if spec.source.kind != "batch":
        raise ConfigError(f"{task}: source.kind: load-batch needs a batch task")
    path = path or spec.source.path
    if path is None:
        raise ConfigError(f"{task}: source.path: name the batch file here or on the command line")
    found = read_batch(path, spec.name)
    engine = _engine(db)
    put_task(engine, spec)
    print(f"loaded {add_items(engine, found)} new items of {len(found)} into {spec.name}")


@app.command()
def stats(
    db: str = DbOption,
    task: str = typer.Option(None, "--task", help="Only this task (default: every task)."),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=0, help="Bootstrap resamples of the alpha CIs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
) -> None:
    """Agreement, position bias and per-reviewer numbers of the stored judgments, as JSON."""
    import json

    from rmtension.bench.stats import bench_stats
    from rmtension.bench.store import load_judgments

    found = load_judgments(_engine(db), task)
    if not found:
        raise ConfigError(f"--db: no judgments{f' of task {task!r}' if task else ''} yet")
    print(json.dumps(bench_stats(found, n_boot=bootstrap, seed=seed), indent=2))


@app.command()
def export(
    task: str = typer.Option(..., "--task", help="The task (by name) whose judgments to export."),
    out: Path = typer.Option(..., "--out", help="JSONL file to write."),
    fmt: str = typer.Option(
        "hh", "--format", help="hh (HH transcripts) or trl (prompt/chosen/rejected/margin)."
    ),
    aggregate: str = typer.Option(
        "majority", "--aggregate", help="majority (a pair per item) or all (per judgment)."
    ),
    redact: bool = typer.Option(False, "--redact", help="Mask the task's `redact` patterns in every text."),
    db: str = DbOption,
) -> None:
    """Write the task's judgments as training pairs (red-team picks flipped to prefer the less harmful reply)."""
    import sys

    from rmtension.bench.export import PERSONAL_DATA_WARNING, export_pairs, write_jsonl
    from rmtension.bench.store import get_tasks, load_items, load_judgments

    if fmt not in ("hh", "trl") or aggregate not in ("majority", "all"):
        raise ConfigError("--format must be hh or trl, --aggregate majority or all")
    engine = _engine(db)
    spec = get_tasks(engine).get(task)
    if spec is None:
        raise ConfigError(
            f"--task: no task named {task!r} in --db (known: {', '.join(get_tasks(engine)) or 'none'})"
        )
    patterns = spec.redact if redact else []
    try:
        rows, summary = export_pairs(
            load_items(engine, task),
            load_judgments(engine, task),
            fmt=fmt,
            aggregate=aggregate,
            redact=patterns,
        )
    except ValueError as e:  # a redaction pattern that does not compile
        raise ConfigError(f"task {task}: {e}") from None
    try:
        write_jsonl(rows, out)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write ({e.strerror})") from None
    print(PERSONAL_DATA_WARNING, file=sys.stderr)
    if redact and not patterns:
        print(f"warning: task {task} has no redact patterns: nothing was masked", file=sys.stderr)
    print(f"{summary.line()}; wrote {out}")


@app.command("delete")
def delete_cmd(
    db: str = DbOption,
    reviewer: str = typer.Option(None, "--reviewer", help="Delete every record of this reviewer."),
    conversation: str = typer.Option(
        None, "--conversation", help="Delete this conversation and its judgments."
    ),
) -> None:
    """Delete a reviewer's or a conversation's records (one transaction; written exports are not touched)."""
    from rmtension.bench.retention import delete_conversation, delete_reviewer

    if (reviewer is None) == (conversation is None):
        raise ConfigError("give exactly one of --reviewer NAME or --conversation ID")
    engine = _engine(db)
    if reviewer is not None:
        counts, what = delete_reviewer(engine, reviewer), f"reviewer {reviewer!r}"
    else:
        counts, what = delete_conversation(engine, conversation), f"conversation {conversation!r}"
    if counts is None:
        raise ConfigError(f"--db: no records of {what}")
    done = ", ".join(f"{table} {n}" for table, n in counts.items())
    print(f"deleted {what}: {done}; exports already written still hold them: delete or re-export those files")
