"""Deleting a reviewer's or a conversation's records from the bench database (`rmtension bench delete`).

One transaction per deletion, so a deletion is whole or not at all.

- A reviewer: their judgments, assignments, sessions and login, and every conversation they held
  (with its items and every judgment of those items, since the items hold the reviewer's own
  words). Batch items they judged stay, for other reviewers; their free slots can be assigned again.
- A conversation: the conversation, its items, and every judgment and assignment of those items.

Exports already written are files outside the database: delete or re-export them as well.
"""

from __future__ import annotations

from sqlalchemy import Engine, delete, select

from rmtension.bench.schema import assignments, conversations, items, judgments, reviewers, sessions


def _delete_conversations(conn, conversation_ids: list[str]) -> dict[str, int]:
    item_ids = list(
        conn.execute(select(items.c.item_id).where(items.c.conversation_id.in_(conversation_ids))).scalars()
    )
    return {
        "judgments": conn.execute(delete(judgments).where(judgments.c.item_id.in_(item_ids))).rowcount,
        "assignments": conn.execute(delete(assignments).where(assignments.c.item_id.in_(item_ids))).rowcount,
        "items": conn.execute(delete(items).where(items.c.item_id.in_(item_ids))).rowcount,
        "conversations": conn.execute(
            delete(conversations).where(conversations.c.conversation_id.in_(conversation_ids))
        ).rowcount,
    }


def delete_conversation(engine: Engine, conversation_id: str) -> dict[str, int] | None:
    """Delete one conversation and everything judged in it; the counts per table, None if there is no such conversation."""
    with engine.begin() as conn:
        found = conn.execute(
            select(conversations.c.conversation_id).where(conversations.c.conversation_id == conversation_id)
        ).first()
        if found is None:
            return None
        return _delete_conversations(conn, [conversation_id])


def delete_reviewer(engine: Engine, name: str) -> dict[str, int] | None:
    """Delete every record of reviewer `name`; the counts per table, None if nothing names them."""
    with engine.begin() as conn:
        held = list(
            conn.execute(
                select(conversations.c.conversation_id).where(conversations.c.reviewer == name)
            ).scalars()
        )
        counts = _delete_conversations(conn, held)
        counts["judgments"] += conn.execute(delete(judgments).where(judgments.c.reviewer == name)).rowcount
        counts["assignments"] += conn.execute(
            delete(assignments).where(assignments.c.reviewer == name)
        ).rowcount
        counts["sessions"] = conn.execute(delete(sessions).where(sessions.c.reviewer == name)).rowcount
        counts["reviewers"] = conn.execute(delete(reviewers).where(reviewers.c.name == name)).rowcount
        return counts if any(counts.values()) else None
