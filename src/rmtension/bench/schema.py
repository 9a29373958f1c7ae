"""The bench's tables (SQLAlchemy Core) and the engine for a database URL.

SQLite (a file path or `sqlite:///...`) runs in WAL mode with `synchronous=FULL`, so a commit
that returned survives a killed process and a lost machine; every transaction starts with
`BEGIN IMMEDIATE`, so concurrent writers queue on the busy timeout instead of failing on a
stale snapshot. `postgresql://` URLs go through psycopg 3.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)

from rmtension.errors import ConfigError

metadata = MetaData()

tasks = Table(
    "bench_tasks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("mode", String(16), nullable=False),
    Column("guideline_version", String(64), nullable=False),
    Column("k", Integer, nullable=False),
    Column("definition", Text, nullable=False),  # the task as JSON
)

reviewers = Table(
    "bench_reviewers",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("token_hash", String(64), unique=True),  # the one-time login token's sha256; NULL once used
    Column("admin", Boolean, nullable=False, default=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created", Float, nullable=False),
)

sessions = Table(
    "bench_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the cookie's value
    Column("reviewer", String(64), nullable=False, index=True),
    Column("expires", Float, nullable=False),
)

conversations = Table(
    "bench_conversations",
    metadata,
    Column("conversation_id", String(32), primary_key=True),
    Column("task", String(64), nullable=False),
    Column("reviewer", String(64), nullable=False, index=True),
    Column("turns", Text, nullable=False),  # JSON list of {"role", "content"}
    Column("ended", Boolean, nullable=False, default=False),
    Column("created", Float, nullable=False),
)

items = Table(
    "bench_items",
    metadata,
    Column("item_id", String(160), primary_key=True),
    Column("task", String(64), nullable=False, index=True),
    Column("kind", String(8), nullable=False),  # batch | live
    Column("conversation_id", String(32), index=True),  # live items only
    Column("conversation", Text, nullable=False),  # JSON turns ending in the user turn
    Column("reply_0", Text, nullable=False, default=""),
    Column("reply_1", Text, nullable=False, default=""),
    Column("source_0", Text, nullable=False, default="{}"),
    Column("source_1", Text, nullable=False, default="{}"),
    Column("state", String(12), nullable=False),  # ready | pending | generating
    Column("created", Float, nullable=False),
)

assignments = Table(
    "bench_assignments",
    metadata,
    Column("item_id", String(160), primary_key=True),
    Column("slot", Integer, primary_key=True),  # 0..k-1: the primary key caps an item at k reviewers
    Column("task", String(64), nullable=False, index=True),
    Column("reviewer", String(64), nullable=False, index=True),
    Column("left", Integer, nullable=False),  # which reply (0/1) the page shows on the left
    Column("shown", Float, nullable=False),
    Column("done", Boolean, nullable=False, default=False),
    UniqueConstraint("item_id", "reviewer", name="one_assignment_per_reviewer"),
)

judgments = Table(
    "bench_judgments",
    metadata,
    Column("judgment_id", String(64), primary_key=True),  # the client's idempotency key
    Column("item_id", String(160), nullable=False),
    Column("task", String(64), nullable=False, index=True),
    Column("mode", String(16), nullable=False),
    Column("reviewer", String(64), nullable=False, index=True),
    Column("guideline_version", String(64), nullable=False),
    Column("left", Integer, nullable=False),
    Column("preferred", Integer),  # NULL for tie / both bad
    Column("both_bad", Boolean, nullable=False),
    Column("strength", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("note", Text, nullable=False),
    Column("created", Float, nullable=False),
    UniqueConstraint("item_id", "reviewer", name="one_judgment_per_reviewer"),
)


def database_url(db: str) -> str:
    """A file path becomes a SQLite URL; `postgresql://` selects the psycopg 3 driver."""
    if db.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + db.split("://", 1)[1]
    if "://" in db:
        if not db.startswith(("sqlite://", "postgresql+psycopg://")):
            raise ConfigError(
                f"--db {db.split('://')[0]}://...: use a file path, sqlite:/// or postgresql://"
            )
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # SQLAlchemy's begin event below issues BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def open_engine(db: str) -> Engine:
    """An engine for `db` (path or URL) with the bench's tables created."""
    url = database_url(db)
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=8, max_overflow=56
        )
        _sqlite_pragmas(engine)
    else:
        engine = create_engine(url, pool_size=8, max_overflow=24, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine
