"""The bench's pages: tasks, live chat, batch judging, the judgment endpoint, reply streaming, statistics.

A judgment is answered (JSON with the next page) only after its transaction committed; the
page's idempotency key makes a retried submit return the stored judgment.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import uuid

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from rmtension.bench import live, store
from rmtension.bench.web import HERE, Bench, page, posted
from rmtension.bench.export import PERSONAL_DATA_WARNING, export_pairs
from rmtension.bench.markup import guidelines_html
from rmtension.bench.schema import assignments, items
from rmtension.bench.stats_page import stats_blocks

log = logging.getLogger("rmtension.bench")
KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_NOTE = 2000
STATIC = {"bench.js": "text/javascript", "bench.css": "text/css", "login.js": "text/javascript"}


def _task(bench: Bench, name: str):
    task = bench.tasks.get(name)
    if task is None:
        raise HTTPException(404, "no such task")
    return task


def item_meta(bench: Bench, item_id: str, reviewer: str):
    """Task, kind and conversation of an item assigned to `reviewer`; an item id that does not exist
    and one assigned to others are refused alike (`store.NOT_YOURS`)."""
    with bench.engine.connect() as conn:
        row = conn.execute(
            select(items.c.task, items.c.kind, items.c.conversation_id)
            .join(assignments, assignments.c.item_id == items.c.item_id)
            .where(items.c.item_id == item_id, assignments.c.reviewer == reviewer)
        ).first()
    if row is None:
        raise store.Refused(store.NOT_YOURS)
    return row


def _judge_context(bench: Bench, task, turns, item_id, left, replies, state, judged) -> dict:
    ready = state == "ready"
    return dict(
        title=task.name,
        task=task,
        turns=turns,
        item_id=item_id,
        state=state,
        judged=judged,
        left_text=replies[left] if ready else "",
        right_text=replies[1 - left] if ready else "",
        judgment_id=uuid.uuid4().hex,
        guidelines=guidelines_html(task.guidelines),
        max_turn=live.MAX_TURN_CHARS,
    )


def chat_page(bench: Bench, request: Request, conv_id: str):
    conv = live.get_conversation(bench.engine, conv_id, request.state.reviewer.name)
    task = _task(bench, conv.task)
    if conv.ended:
        return page(
            request, "message.html", title="Conversation ended", message="This conversation has ended."
        )
    left, replies, state = 0, ("", ""), None
    if conv.item_id:
        row = live.shown_item(bench.engine, conv.item_id, request.state.reviewer.name)
        left, replies, state = row.left, (row.reply_0, row.reply_1), row.state
    ctx = _judge_context(bench, task, conv.turns, conv.item_id, left, replies, state, conv.judged)
    return page(request, "judge.html", kind="live", conv_id=conv_id, **ctx)


def batch_page(bench: Bench, request: Request, name: str):
    task = _task(bench, name)
    shown = store.next_item(bench.engine, task, request.state.reviewer.name)
    if shown is None:
        return page(
            request, "message.html", title="All done", message=f"Nothing left for you to judge in {name}."
        )
    item = shown.item
    ctx = _judge_context(
        bench, task, item.conversation, item.item_id, shown.left, (item.reply_0, item.reply_1), "ready", False
    )
    return page(request, "judge.html", kind="batch", conv_id="", **ctx)


def _choice(form: dict[str, str]) -> store.Choice:
    key, item_id = form.get("judgment_id", ""), form.get("item_id", "")
    if not KEY.match(key) or not item_id or len(item_id) > 160:
        raise HTTPException(400, "judgment_id (8-64 of letters, digits, - _) and item_id are required")
    strength, note = form.get("strength", "0"), form.get("note", "")
    if len(note) > MAX_NOTE:
        raise HTTPException(400, f"a note holds at most {MAX_NOTE} characters")
    return store.Choice(
        judgment_id=key,
        item_id=item_id,
        pick=form.get("pick", ""),
        strength=int(strength) if strength.isdigit() and len(strength) < 3 else 0,
        note=note,
    )


def judge(bench: Bench, reviewer: str, choice: store.Choice) -> dict:
    """Record the judgment; a live pick of A or B also continues the conversation with it."""
    meta = item_meta(bench, choice.item_id, reviewer)
    task = _task(bench, meta.task)
    j = store.record(bench.engine, task, reviewer, choice)
    if meta.kind == "batch":
        nxt = f"/task/{task.name}/next"
    else:
        nxt = f"/chat/{meta.conversation_id}"
        if j.preferred is not None:
            try:
                live.continue_with(bench.engine, meta.conversation_id, reviewer, j.item_id, j.preferred)
            except store.Refused:
                pass  # a retried submit: the conversation went on already
    return {"ok": True, "judgment_id": j.judgment_id, "preferred": j.preferred, "left": j.left, "next": nxt}


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def reply_events(bench: Bench, item_id: str, turns, left: int, source):
    """Server-sent events of both replies as they are written; the item is stored before `done`."""
    texts, settings, finished = ["", ""], [{}, {}], False
    try:
        for event in source.stream(turns, secrets.randbelow(2**31)):
            if event[0] == "delta":
                yield sse("delta", {"side": "left" if event[1] == left else "right", "text": event[2]})
            else:
                texts[event[1]], settings[event[1]] = event[2], event[3]
        live.finish(bench.engine, item_id, (texts[0], texts[1]), (settings[0], settings[1]))
        finished = True
        yield sse("done", {})
    except Exception:
        log.exception("generating replies for %s failed", item_id)
        yield sse("failed", {"message": "The model could not reply."})
    finally:
        if not finished:
            live.release(bench.engine, item_id)


def stream_replies(bench: Bench, request: Request, item_id: str):
    reviewer = request.state.reviewer.name
    meta = item_meta(bench, item_id, reviewer)
    claimed = live.claim(bench.engine, item_id, reviewer)
    if claimed is None:  # written already (a reload) or being written by another request
        row = live.shown_item(bench.engine, item_id, reviewer)
        if row.state == "ready":
            replies = (row.reply_0, row.reply_1)
            events = [
                sse("delta", {"side": "left", "text": replies[row.left]}),
                sse("delta", {"side": "right", "text": replies[1 - row.left]}),
                sse("done", {}),
            ]
        else:
            events = [sse("failed", {"message": "These replies are being written in another window."})]
        return StreamingResponse(iter(events), media_type="text/event-stream")
    turns, left = claimed
    source = bench.replies.get(meta.task)
    if source is None:
        live.release(bench.engine, item_id)
        raise HTTPException(409, "this task has no reply source")
    return StreamingResponse(
        reply_events(bench, item_id, turns, left, source),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )


def export_download(bench: Bench, task, fmt: str, aggregate: str, redact: bool) -> Response:
    """The task's pairs as a JSONL download (`rmtension bench export` over HTTP), redacted by default."""
    if fmt not in ("hh", "trl") or aggregate not in ("majority", "all"):
        raise HTTPException(400, "format must be hh or trl, aggregate majority or all")
    rows, summary = export_pairs(
        store.load_items(bench.engine, task.name),
        store.load_judgments(bench.engine, task.name),
        fmt=fmt,
        aggregate=aggregate,
        redact=task.redact if redact else [],
    )
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    headers = {
        "Content-Disposition": f'attachment; filename="{task.name}-{fmt}.jsonl"',
        "X-Bench-Export": summary.line()[:500],
        "X-Bench-Warning": PERSONAL_DATA_WARNING[:500],
    }
    return Response(body, media_type="application/x-ndjson", headers=headers)


def add_chat_views(app: FastAPI, bench: Bench) -> None:
    """Live chat: start, turn, continue with a named reply, two new replies, end."""

    @app.post("/chat/new")
    async def chat_new(request: Request):
        form = await posted(request)
        task = _task(bench, form.get("task", ""))
        if task.source.kind != "live":
            raise HTTPException(400, "this task is judged in batches")
        conv = await run_in_threadpool(
            live.new_conversation, bench.engine, task.name, request.state.reviewer.name
        )
        return RedirectResponse(f"/chat/{conv}", status_code=303)

    @app.get("/chat/{conv_id}")
    def chat(request: Request, conv_id: str):
        return chat_page(bench, request, conv_id)

    @app.post("/chat/{conv_id}/turn")
    async def chat_turn(request: Request, conv_id: str):
        form = await posted(request)
        name = request.state.reviewer.name
        await run_in_threadpool(live.add_user_turn, bench.engine, conv_id, name, form.get("text", ""))
        return RedirectResponse(f"/chat/{conv_id}", status_code=303)

    @app.post("/chat/{conv_id}/continue")
    async def chat_continue(request: Request, conv_id: str):
        form = await posted(request)
        name, item_id = request.state.reviewer.name, form.get("item_id", "")
        if form.get("side") not in ("left", "right"):
            raise HTTPException(400, "side must be left or right")
        row = await run_in_threadpool(live.shown_item, bench.engine, item_id, name)
        which = row.left if form.get("side") == "left" else 1 - row.left
        await run_in_threadpool(live.continue_with, bench.engine, conv_id, name, item_id, which)
        return RedirectResponse(f"/chat/{conv_id}", status_code=303)

    @app.post("/chat/{conv_id}/again")
    async def chat_again(request: Request, conv_id: str):
        await posted(request)
        await run_in_threadpool(live.new_replies, bench.engine, conv_id, request.state.reviewer.name)
        return RedirectResponse(f"/chat/{conv_id}", status_code=303)

    @app.post("/chat/{conv_id}/end")
    async def chat_end(request: Request, conv_id: str):
        await posted(request)
        await run_in_threadpool(live.end_conversation, bench.engine, conv_id, request.state.reviewer.name)
        return RedirectResponse("/", status_code=303)


def add_views(app: FastAPI, bench: Bench) -> None:
    add_chat_views(app, bench)

    @app.get("/")
    def home(request: Request):
        return page(request, "home.html", title="Tasks", tasks=list(bench.tasks.values()))

    @app.get("/static/{name}")
    def static(name: str):
        if name not in STATIC:
            raise HTTPException(404, "not found")
        return FileResponse(HERE / "static" / name, media_type=STATIC[name])

    @app.get("/items/{item_id}/stream")
    def stream(request: Request, item_id: str):
        return stream_replies(bench, request, item_id)

    @app.get("/task/{name}/next")
    def batch_next(request: Request, name: str):
        return batch_page(bench, request, name)

    @app.post("/judge")
    async def judge_post(request: Request):
        choice = _choice(await posted(request))
        answer = await run_in_threadpool(judge, bench, request.state.reviewer.name, choice)
        return JSONResponse(answer)

    @app.get("/admin/export")
    def export(
        request: Request, task: str, format: str = "hh", aggregate: str = "majority", redact: bool = True
    ):
        if not request.state.reviewer.admin:
            raise HTTPException(403, "exports are for admins")
        return export_download(bench, _task(bench, task), format, aggregate, redact)

    @app.get("/admin/stats")
    def stats(request: Request):
        if not request.state.reviewer.admin:
            raise HTTPException(403, "the statistics page is for admins")
        return page(
            request, "stats.html", title="Statistics", stats=stats_blocks(bench.engine), tasks=bench.tasks
        )
