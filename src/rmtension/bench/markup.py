"""Guidelines Markdown to HTML, safely: every character is escaped first, then a tiny subset
(headings `#`..`###`, `-`/`*` and `1.` lists, paragraphs, `**bold**`, `` `code` ``) becomes tags.

No links, images or raw HTML: a task file is trusted more than a model, but the page never
has to decide how much.
"""

from __future__ import annotations

import html
import re

from markupsafe import Markup

BOLD = re.compile(r"\*\*(.+?)\*\*")
CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    """Escape, then bold and code spans (their markers contain no characters escaping changes)."""
    out = html.escape(text, quote=True)
    out = CODE.sub(r"<code>\1</code>", out)
    return BOLD.sub(r"<strong>\1</strong>", out)


def guidelines_html(markdown: str) -> Markup:
    """The guidelines as HTML made only of h3-h5, p, ul/ol/li, strong and code around escaped text."""
    blocks: list[str] = []
    paragraph: list[str] = []
    bullets: list[str] = []
    kind = ["ul"]

    def flush() -> None:
        if paragraph:
            blocks.append("<p>" + _inline(" ".join(paragraph)) + "</p>")
            paragraph.clear()
        if bullets:
            items = "".join(f"<li>{_inline(b)}</li>" for b in bullets)
            blocks.append(f"<{kind[0]}>{items}</{kind[0]}>")
            bullets.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        heading = re.match(r"^(#{1,3})\s+(.*)$", line)
        bullet = re.match(r"^(?:[-*]|(\d+)\.)\s+(.*)$", line)
        if not line:
            flush()
        elif heading:
            flush()
            level = len(heading.group(1)) + 2
            blocks.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif bullet:
            list_kind = "ol" if bullet.group(1) else "ul"
            if paragraph or (bullets and kind[0] != list_kind):
                flush()
            kind[0] = list_kind
            bullets.append(bullet.group(2))
        elif bullets and raw.startswith((" ", "\t")):
            bullets[-1] += " " + line  # a wrapped list item
        else:
            if bullets:
                flush()
            paragraph.append(line)
    flush()
    return Markup("\n".join(blocks))
