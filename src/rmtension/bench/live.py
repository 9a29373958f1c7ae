"""Live chat: a reviewer's conversation, one item per turn, replies generated on request.

A conversation is a list of turns. The reviewer's turn makes a `live` item (state `pending`)
with the conversation so far and one assignment (the reviewer, a random left side). Streaming
claims the item (`generating`), and on completion stores both replies and marks it `ready`;
only then can it be judged. After the judgment one reply continues the conversation: the pick,
or after a tie or "both bad" the reply the reviewer names; or the reviewer asks for two new
replies to the same turn (a fresh item), or ends the conversation.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update

from rmtension.bench.records import Turn
from rmtension.bench.schema import assignments, conversations, items, judgments
from rmtension.bench.store import NOT_YOURS, Refused, parse_turns, turns_json

MAX_TURN_CHARS = 4000
MAX_TURNS = 40


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    task: str
    turns: tuple[Turn, ...]
    ended: bool
    item_id: str | None
    """The item of the last user turn, while its replies are not yet in the conversation."""
    item_state: str | None
    judged: bool


def new_conversation(engine: Engine, task: str, reviewer: str) -> str:
    conv_id = secrets.token_hex(8)
    with engine.begin() as conn:
        conn.execute(
            insert(conversations).values(
                conversation_id=conv_id,
                task=task,
                reviewer=reviewer,
                turns="[]",
                ended=False,
                created=time.time(),
            )
        )
    return conv_id


def _conversation_row(conn, conv_id: str, reviewer: str):
    row = conn.execute(
        select(conversations).where(
            conversations.c.conversation_id == conv_id, conversations.c.reviewer == reviewer
        )
    ).first()
    if row is None:
        raise Refused("no such conversation")
    return row


def _last_item(conn, conv_id: str):
    return conn.execute(
        select(items.c.item_id, items.c.state, items.c.reply_0, items.c.reply_1)
        .where(items.c.conversation_id == conv_id)
        .order_by(items.c.created.desc(), items.c.item_id.desc())
        .limit(1)
    ).first()


def get_conversation(engine: Engine, conv_id: str, reviewer: str) -> Conversation:
    with engine.connect() as conn:
        row = _conversation_row(conn, conv_id, reviewer)
        turns = parse_turns(row.turns)
        item = _last_item(conn, conv_id) if turns and turns[-1].role == "user" else None
        judged = item is not None and _judged(conn, item.item_id)
    return Conversation(
        conv_id,
        row.task,
        turns,
        bool(row.ended),
        item.item_id if item else None,
        item.state if item else None,
        judged,
    )


def _judged(conn, item_id: str) -> bool:
    return (
        conn.execute(select(judgments.c.judgment_id).where(judgments.c.item_id == item_id)).first()
        is not None
    )


def _new_item(conn, row, reviewer: str, turns: tuple[Turn, ...]) -> str:
    item_id = f"live-{row.conversation_id}-{secrets.token_hex(6)}"
    now = time.time()
    conn.execute(
        insert(items).values(
            item_id=item_id,
            task=row.task,
            kind="live",
            conversation_id=row.conversation_id,
            conversation=turns_json(turns),
            state="pending",
            created=now,
        )
    )
    conn.execute(
        insert(assignments).values(
            item_id=item_id,
            slot=0,
            task=row.task,
            reviewer=reviewer,
            left=secrets.randbelow(2),
            shown=now,
            done=False,
        )
    )
    return item_id


def add_user_turn(engine: Engine, conv_id: str, reviewer: str, text: str) -> str:
    """Append the reviewer's turn; the id of the item whose replies will answer it."""
    text = text.strip()
    if not text:
        raise Refused("write a message first")
    if len(text) > MAX_TURN_CHARS:
        raise Refused(f"a turn holds at most {MAX_TURN_CHARS} characters")
    with engine.begin() as conn:
        row = _conversation_row(conn, conv_id, reviewer)
        turns = parse_turns(row.turns)
        if row.ended:
            raise Refused("this conversation has ended")
        if turns and turns[-1].role == "user":
            raise Refused("judge the replies to your last turn first")
        if len(turns) >= MAX_TURNS:
            raise Refused("this conversation is long enough: end it and start a new one")
        turns = turns + (Turn("user", text),)
        conn.execute(
            update(conversations)
            .where(conversations.c.conversation_id == conv_id)
            .values(turns=turns_json(turns))
        )
        return _new_item(conn, row, reviewer, turns)


def new_replies(engine: Engine, conv_id: str, reviewer: str) -> str:
    """Two new replies to the same last turn, after the current pair was judged: a fresh item."""
    with engine.begin() as conn:
        row = _conversation_row(conn, conv_id, reviewer)
        turns = parse_turns(row.turns)
        item = _last_item(conn, conv_id)
        if row.ended or not turns or turns[-1].role != "user" or item is None:
            raise Refused("there is no turn waiting for replies")
        if not _judged(conn, item.item_id):
            raise Refused("judge these replies first")
        return _new_item(conn, row, reviewer, turns)


def continue_with(engine: Engine, conv_id: str, reviewer: str, item_id: str, which: int) -> None:
    """Append reply `which` (0/1, canonical order) of the judged item to the conversation."""
    with engine.begin() as conn:
        row = _conversation_row(conn, conv_id, reviewer)
        turns = parse_turns(row.turns)
        item = _last_item(conn, conv_id)
        if item is None or item.item_id != item_id or not turns or turns[-1].role != "user":
            raise Refused("that reply no longer continues this conversation")
        if not _judged(conn, item_id):
            raise Refused("judge these replies first")
        reply = item.reply_0 if which == 0 else item.reply_1
        turns = turns + (Turn("assistant", reply),)
        conn.execute(
            update(conversations)
            .where(conversations.c.conversation_id == conv_id)
            .values(turns=turns_json(turns))
        )


def end_conversation(engine: Engine, conv_id: str, reviewer: str) -> None:
    with engine.begin() as conn:
        _conversation_row(conn, conv_id, reviewer)
        conn.execute(
            update(conversations).where(conversations.c.conversation_id == conv_id).values(ended=True)
        )


def claim(engine: Engine, item_id: str, reviewer: str) -> tuple[tuple[Turn, ...], int] | None:
    """Move a pending live item of `reviewer` to `generating`: (its conversation, left side), or None."""
    with engine.begin() as conn:
        asg = conn.execute(
            select(assignments.c.left).where(
                assignments.c.item_id == item_id, assignments.c.reviewer == reviewer
            )
        ).first()
        if asg is None:
            raise Refused(NOT_YOURS)
        done = conn.execute(
            update(items)
            .where(items.c.item_id == item_id, items.c.kind == "live", items.c.state == "pending")
            .values(state="generating")
        )
        if done.rowcount != 1:
            return None
        conv = conn.execute(select(items.c.conversation).where(items.c.item_id == item_id)).scalar()
    return parse_turns(conv), asg.left


def finish(engine: Engine, item_id: str, replies: tuple[str, str], sources: tuple[dict, dict]) -> None:
    """Store both replies; the item becomes judgeable and the reviewer's clock starts now."""
    with engine.begin() as conn:
        conn.execute(
            update(items)
            .where(items.c.item_id == item_id)
            .values(
                reply_0=replies[0],
                reply_1=replies[1],
                source_0=json.dumps(sources[0]),
                source_1=json.dumps(sources[1]),
                state="ready",
            )
        )
        conn.execute(update(assignments).where(assignments.c.item_id == item_id).values(shown=time.time()))


def release(engine: Engine, item_id: str) -> None:
    """Generation failed or the page went away: the item can be claimed again."""
    with engine.begin() as conn:
        conn.execute(
            update(items)
            .where(items.c.item_id == item_id, items.c.state == "generating")
            .values(state="pending")
        )


def reset_interrupted(engine: Engine) -> int:
    """At server start: items left `generating` by a stopped server become `pending` again."""
    with engine.begin() as conn:
        done = conn.execute(update(items).where(items.c.state == "generating").values(state="pending"))
    return done.rowcount


def shown_item(engine: Engine, item_id: str, reviewer: str):
    """(left, reply_0, reply_1, state) of an item the reviewer holds."""
    with engine.connect() as conn:
        row = conn.execute(
            select(assignments.c.left, items.c.reply_0, items.c.reply_1, items.c.state)
            .join(items, items.c.item_id == assignments.c.item_id)
            .where(assignments.c.item_id == item_id, assignments.c.reviewer == reviewer)
        ).first()
    if row is None:
        raise Refused(NOT_YOURS)
    return row
