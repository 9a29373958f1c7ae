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
) -> None:
    """Serve the bench until interrupted."""
    import uvicorn

    from rmtension.bench.app import Bench, make_app
    from rmtension.bench.store import put_task
    from rmtension.bench.task import load_task

    tasks = {t.name: t for t in (load_task(p) for p in task)}
    engine = _engine(db)
    replies = {}
    for t in tasks.values():
        put_task(engine, t)
        if t.source.kind == "live":
            from rmtension.bench.replies import PolicyReplies  # torch and the model: live tasks only

            replies[t.name] = PolicyReplies(t.source, cache_dir)
            replies[t.name].policies()  # load now: the first reviewer should not wait for it
    print(f"bench: serving {', '.join(tasks)} on http://{host}:{port}/", flush=True)
    uvicorn.run(make_app(Bench(engine, tasks, replies)), host=host, port=port, log_level="warning")


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
