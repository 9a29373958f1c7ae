"""Items, assignments and judgments: every write is one transaction, acknowledged after commit.

Assignment: an item has slots 0..k-1 (the primary key of `bench_assignments`), and a reviewer
holds at most one slot of an item (a unique constraint), so concurrent servers and threads can
never give an item to more than k reviewers or twice to one. A slot whose reviewer has not
judged within `lease` seconds goes to the next reviewer who asks.

A judgment carries the client's idempotency key: a retried submit (lost reply, killed server)
returns the stored judgment instead of writing a second one.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace

from sqlalchemy import Engine, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from rmtension.bench.records import Item, Judgment, Turn
from rmtension.bench.schema import assignments, items, judgments, tasks
from rmtension.bench.task import Task

LEASE_SECONDS = 1800.0


class Refused(Exception):
    """A request the store will not carry out; the message is for the reviewer."""


NOT_YOURS = "no such item among yours"
"""The one answer for an item id that does not exist and for one assigned to someone else, so that
the answer does not tell which ids exist."""


@dataclass(frozen=True)
class Shown:
    """An item as one reviewer sees it: which reply is on the left, since when."""

    item: Item
    left: int
    shown: float
    kind: str
    state: str


def turns_json(turns) -> str:
    return json.dumps([{"role": t.role, "content": t.content} for t in turns], ensure_ascii=False)


def parse_turns(text: str) -> tuple[Turn, ...]:
    return tuple(Turn(t["role"], t["content"]) for t in json.loads(text))


def item_from_row(row) -> Item:
    return Item(
        item_id=row.item_id,
        task=row.task,
        conversation=parse_turns(row.conversation),
        reply_0=row.reply_0,
        reply_1=row.reply_1,
        source_0=json.loads(row.source_0),
        source_1=json.loads(row.source_1),
    )


def judgment_from_row(row) -> Judgment:
    return Judgment(
        item_id=row.item_id,
        task=row.task,
        mode=row.mode,
        reviewer=row.reviewer,
        guideline_version=row.guideline_version,
        left=row.left,
        preferred=row.preferred,
        both_bad=bool(row.both_bad),
        strength=row.strength,
        seconds=row.seconds,
        note=row.note,
        judgment_id=row.judgment_id,
    )


def put_task(engine: Engine, task: Task) -> None:
    """Register (or update) a task's definition; judgments keep the guideline version they were made under."""
    values = dict(
        mode=task.mode, guideline_version=task.guideline_version, k=task.k, definition=task.model_dump_json()
    )
    with engine.begin() as conn:
        done = conn.execute(update(tasks).where(tasks.c.name == task.name).values(**values))
        if done.rowcount == 0:
            conn.execute(insert(tasks).values(name=task.name, **values))


def get_tasks(engine: Engine) -> dict[str, Task]:
    with engine.connect() as conn:
        rows = conn.execute(select(tasks.c.definition)).all()
    out = [Task.model_validate_json(r.definition) for r in rows]
    return {t.name: t for t in out}


def add_items(engine: Engine, new: list[Item]) -> int:
    """Store batch items; ids already present are skipped. The number added."""
    now = time.time()
    with engine.begin() as conn:
        have = set(
            conn.execute(
                select(items.c.item_id).where(items.c.item_id.in_([i.item_id for i in new]))
            ).scalars()
        )
        rows = [
            dict(
                item_id=i.item_id,
                task=i.task,
                kind="batch",
                conversation=turns_json(i.conversation),
                reply_0=i.reply_0,
                reply_1=i.reply_1,
                source_0=json.dumps(i.source_0),
                source_1=json.dumps(i.source_1),
                state="ready",
                created=now,
            )
            for i in new
            if i.item_id not in have
        ]
        if rows:
            conn.execute(insert(items), rows)
    return len(rows)


def _open_assignment(conn, task: str, reviewer: str) -> Shown | None:
    row = conn.execute(
        select(items, assignments.c.left, assignments.c.shown)
        .join(assignments, assignments.c.item_id == items.c.item_id)
        .where(
            assignments.c.reviewer == reviewer,
            assignments.c.task == task,
            assignments.c.done.is_(False),
            items.c.kind == "batch",
        )
        .limit(1)
    ).first()
    return None if row is None else Shown(item_from_row(row), row.left, row.shown, row.kind, row.state)


def _candidates(conn, task: str, reviewer: str, k: int) -> list[tuple[str, set[int]]]:
    """Batch items with a free slot that `reviewer` has not held: (item_id, used slots)."""
    mine = select(assignments.c.item_id).where(assignments.c.reviewer == reviewer)
    held = (
        select(items.c.item_id, func.count(assignments.c.slot).label("n"))
        .select_from(items.outerjoin(assignments, assignments.c.item_id == items.c.item_id))
        .where(items.c.task == task, items.c.kind == "batch", items.c.item_id.not_in(mine))
        .group_by(items.c.item_id, items.c.created)
        .having(func.count(assignments.c.slot) < k)
        .order_by(items.c.created, items.c.item_id)
        .limit(16)
    )
    ids = [r.item_id for r in conn.execute(held)]
    used: dict[str, set[int]] = {i: set() for i in ids}
    for r in conn.execute(
        select(assignments.c.item_id, assignments.c.slot).where(assignments.c.item_id.in_(ids))
    ):
        used[r.item_id].add(r.slot)
    return list(used.items())


def _take_expired(conn, task: str, reviewer: str, lease: float) -> bool:
    """Move one slot whose reviewer let the lease run out to `reviewer`; True when one moved."""
    now = time.time()
    mine = select(assignments.c.item_id).where(assignments.c.reviewer == reviewer)
    stale = conn.execute(
        select(assignments.c.item_id, assignments.c.slot)
        .where(
            assignments.c.task == task,
            assignments.c.done.is_(False),
            assignments.c.shown < now - lease,
            assignments.c.item_id.not_in(mine),
        )
        .limit(1)
    ).first()
    if stale is None:
        return False
    moved = conn.execute(
        update(assignments)
        .where(
            assignments.c.item_id == stale.item_id,
            assignments.c.slot == stale.slot,
            assignments.c.done.is_(False),
            assignments.c.shown < now - lease,
        )
        .values(reviewer=reviewer, shown=now, left=secrets.randbelow(2))
    )
    return moved.rowcount == 1


def next_item(engine: Engine, task: Task, reviewer: str, lease: float = LEASE_SECONDS) -> Shown | None:
    """The reviewer's open batch item, else a newly assigned one; None when nothing is left for them."""
    for _attempt in range(20):
        try:
            with engine.begin() as conn:
                shown = _open_assignment(conn, task.name, reviewer)
                if shown is not None:
                    return shown
                cands = _candidates(conn, task.name, reviewer, task.k)
                if not cands:
                    if _take_expired(conn, task.name, reviewer, lease):
                        return _open_assignment(conn, task.name, reviewer)
                    return None
                item_id, used = random.choice(cands[:4])  # spread concurrent reviewers over items
                slot = min(set(range(task.k)) - used)
                conn.execute(
                    insert(assignments).values(
                        item_id=item_id,
                        slot=slot,
                        task=task.name,
                        reviewer=reviewer,
                        left=secrets.randbelow(2),
                        shown=time.time(),
                        done=False,
                    )
                )
                return _open_assignment(conn, task.name, reviewer)
        except IntegrityError:
            continue  # another reviewer took that slot at the same moment (PostgreSQL): ask again
    raise Refused("the bench is busy; try again")


@dataclass(frozen=True)
class Choice:
    """What a reviewer submitted, in screen terms."""

    judgment_id: str
    item_id: str
    pick: str  # left | right | tie | both_bad
    strength: int
    note: str


def _judgment_values(choice: Choice, task: Task, reviewer: str, asg) -> dict:
    if choice.pick in ("left", "right"):
        preferred = asg.left if choice.pick == "left" else 1 - asg.left
        strength = choice.strength
    else:
        preferred, strength = None, 0
    return dict(
        judgment_id=choice.judgment_id,
        item_id=choice.item_id,
        task=task.name,
        mode=task.mode,
        reviewer=reviewer,
        guideline_version=task.guideline_version,
        left=asg.left,
        preferred=preferred,
        both_bad=choice.pick == "both_bad",
        strength=strength,
        seconds=round(max(0.0, time.time() - asg.shown), 3),
        note=choice.note,
        created=time.time(),
    )


def _existing(conn, judgment_id: str, reviewer: str) -> Judgment | None:
    row = conn.execute(select(judgments).where(judgments.c.judgment_id == judgment_id)).first()
    if row is None:
        return None
    if row.reviewer != reviewer:
        raise Refused("that judgment key is taken: reload the page for a new one")
    return judgment_from_row(row)


def record(engine: Engine, task: Task, reviewer: str, choice: Choice) -> Judgment:
    """Store a judgment and close its assignment in one transaction; a repeated key returns the stored one."""
    if choice.pick not in ("left", "right", "tie", "both_bad"):
        raise Refused("choice must be left, right, tie or both_bad")
    if choice.pick in ("left", "right") and choice.strength not in (1, 2, 3):
        raise Refused("strength must be 1, 2 or 3")
    try:
        with engine.begin() as conn:
            seen = _existing(conn, choice.judgment_id, reviewer)
            if seen is not None:
                return seen
            asg = conn.execute(
                select(assignments).where(
                    and_(assignments.c.item_id == choice.item_id, assignments.c.reviewer == reviewer)
                )
            ).first()
            state = conn.execute(select(items.c.state).where(items.c.item_id == choice.item_id)).scalar()
            if asg is None or asg.task != task.name:
                raise Refused(NOT_YOURS)
            if state != "ready":
                raise Refused("these replies are not written yet")
            if asg.done:
                raise Refused("you have already judged this item")
            values = _judgment_values(choice, task, reviewer, asg)
            conn.execute(insert(judgments).values(**values))
            conn.execute(
                update(assignments)
                .where(assignments.c.item_id == choice.item_id, assignments.c.reviewer == reviewer)
                .values(done=True)
            )
    except IntegrityError:  # the same key raced in from a retry: the first one won
        with engine.connect() as conn:
            seen = _existing(conn, choice.judgment_id, reviewer)
        if seen is None:
            raise Refused("you have already judged this item") from None
        return seen
    return judgment_from_row(SimpleNamespace(**values))


def load_judgments(engine: Engine, task: str | None = None) -> list[Judgment]:
    """Every stored judgment (of one task), oldest first."""
    query = select(judgments).order_by(judgments.c.created, judgments.c.judgment_id)
    if task is not None:
        query = query.where(judgments.c.task == task)
    with engine.connect() as conn:
        return [judgment_from_row(r) for r in conn.execute(query)]


def load_items(engine: Engine, task: str | None = None) -> list[Item]:
    """Every item with both replies (of one task)."""
    query = select(items).where(items.c.state == "ready").order_by(items.c.created, items.c.item_id)
    if task is not None:
        query = query.where(items.c.task == task)
    with engine.connect() as conn:
        return [item_from_row(r) for r in conn.execute(query)]


def judgment_dict(j: Judgment) -> dict:
    return asdict(j)
