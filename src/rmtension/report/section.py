"""A report section and the writer of `report.md`, a self-contained `report.html` and `tables/*.csv`.

Used by the study report (`rmtension.report.document`) and the comparison of runs (`rmtension.report.compare`).
The HTML has inline CSS and images only (data URIs), so it opens offline and from any folder.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rmtension.stats.verdicts import VERDICTS

from rmtension.report.figures import inline_png
from rmtension.run.runio import atomic_write_text, write_csv


@dataclass
class Section:
    title: str
    anchor: str
    paragraphs: list[str] = field(default_factory=list)
    """Plain text with `code` and **bold**; a paragraph starting with <pre> is preformatted."""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    """(caption, table); each is also saved as `tables/<anchor>_<i>.csv`."""
    figures: list[tuple[str, Path]] = field(default_factory=list)
    """(caption, PNG path under figures/)."""
    subsections: list["Section"] = field(default_factory=list)
    part: str = ""
    """The report's top-level part it goes in (`rmtension.report.document.PARTS`); empty: not placed."""


def in_part(part: str, *sections: Section | None) -> list[Section]:
    """The sections that exist (not None), each placed in the report's part `part`, in order."""
    out = [s for s in sections if s is not None]
    for s in out:
        s.part = part
    return out


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45;background:#fff}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f3f3f3}caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.85em;color:#555}
.wide{overflow-x:auto}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em;max-height:24em}nav a{margin-right:.8em}
.verdict{font-weight:600;padding:0 .3em;border-radius:3px}
.v-supported{background:#cfe8f7}.v-not-supported{background:#f9d9c4}.v-inconclusive{background:#eee}.v-non-zero-but-small{background:#fbefc9}.v-not-testable-here{background:#eee;border:1px dashed #999}.v-not-run{background:#fff;border:1px dashed #999}
.csv{font-size:.8em;color:#555;font-weight:normal}"""


def write_document(out_dir: Path, title: str, sections: list[Section]) -> Path:
    """Write `report.md`, `report.html` and one CSV per table under `out_dir`; returns the HTML path."""
    md, body = [f"# {title}", ""], []
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    written: set[str] = set()
    for s in sections:
        _render(s, out_dir, 2, md, body, written)
    _prune(out_dir / "tables", "*.csv", written)
    atomic_write_text(out_dir / "report.md", "\n".join(md) + "\n")
    page = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        '<link rel="icon" href="data:,">'  # no favicon request: the page makes no request at all
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>{''.join(body)}</body></html>"
    )
    return atomic_write_text(out_dir / "report.html", page)


def _render(s: Section, out_dir: Path, level: int, md: list[str], body: list[str], written: set[str]) -> None:
    md += [f"{'#' * level} {s.title}", ""]
    body.append(f'<section id="{s.anchor}"><h{level}>{html.escape(s.title)}</h{level}>')
    for p in s.paragraphs:
        if p.startswith("<pre>"):
            md += [html.unescape(p.replace("<pre>", "```\n").replace("</pre>", "\n```")), ""]
            body.append(p)
        else:
            md += [p, ""]
            body.append(f"<p>{inline_md(p)}</p>")
    for i, (caption, table) in enumerate(s.tables):
        name = f"{s.anchor}_{i}.csv"
        write_csv(out_dir / "tables" / name, table)
        written.add(name)
        md += [f"**{caption}** (`tables/{name}`)", "", _markdown_table(table), ""]
        body.append(html_table(table, f"{caption} ", f"tables/{name}"))
    for caption, png in s.figures:
        rel = png.relative_to(out_dir).as_posix()
        md += [f"![{caption}]({rel})", "", f"*{caption}* (`{rel}`, PDF beside it)", ""]
        body.append(
            f'<figure><img src="{inline_png(png)}" alt="{html.escape(caption)}"><figcaption>{inline_md(caption)} '
            f"(<code>{html.escape(rel)}</code>, PDF beside it)</figcaption></figure>"
        )
    for sub in s.subsections:
        _render(sub, out_dir, level + 1, md, body, written)
    body.append("</section>")


def prune_figures(out_dir: Path, keep: set[str]) -> None:
    """Remove figures/<name>.{png,pdf} not made by this build (a stage that no longer runs leaves none behind)."""
    folder = out_dir / "figures"
    for path in folder.glob("*.p[nd][gf]") if folder.is_dir() else []:
        if path.stem not in keep:
            path.unlink()


def _prune(folder: Path, pattern: str, keep: set[str]) -> None:
    for path in folder.glob(pattern) if folder.is_dir() else []:
        if path.name not in keep:
            path.unlink()


def html_table(table: pd.DataFrame, caption: str, csv: str | None = None) -> str:
    raw = table.to_html(index=False, border=0, escape=True, na_rep="")
    cut = raw.index(">") + 1
    link = f'<span class="csv">(<code>{html.escape(csv)}</code>)</span>' if csv else ""
    table_html = raw[:cut] + f"<caption>{inline_md(caption)}{link}</caption>" + _badges(raw[cut:])
    return f'<div class="wide">{table_html}</div>'  # a wide table scrolls inside itself, not the page


def _badges(cells: str) -> str:
    """Verdict cells get a coloured badge (the colour repeats the word, it never replaces it)."""
    for v in VERDICTS:
        cls = "v-" + v.replace(" ", "-")
        cells = cells.replace(f"<td>{v}</td>", f'<td><span class="verdict {cls}">{v}</span></td>')
    return cells


def inline_md(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _markdown_table(table: pd.DataFrame) -> str:
    try:
        return table.to_markdown(index=False)
    except ImportError:  # tabulate is optional for markdown
        return table.to_string(index=False)
