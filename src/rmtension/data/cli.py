"""`rmtension data ...`: look at a data folder before training on it.

Imports inside functions: the CLI answers --help and a bad argument in under a second.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from rmtension.config import DataConfig
from rmtension.data.formats import FORMATS, get_format, load_pairs, xstest_result
from rmtension.data.splits import split_pairs
from rmtension.data.summary import load_account, token_stats
from rmtension.data.xstest import load_xstest, xstest_account
from rmtension.errors import RmtensionError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Plain aligned text: numeric columns right-aligned, the others left-aligned."""
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(isinstance(r[i], (int, float)) for r in rows) for i in range(len(headers))]
    fmt = lambda r: "  ".join(
        c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)
    ).rstrip()  # noqa: E731
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]])


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items()) or "-"


@app.callback()
def _group() -> None:
    """Inspect preference data."""


@app.command()
def summary(
    data: str = typer.Option(
        None,
        "--data",
        envvar="RMTENSION_DATA",
        help="Data folder (official layout), RMB folder or XSTest folder.",
    ),
    fmt: str = typer.Option("hh", "--format", help=f"Row format: {', '.join(FORMATS)}."),
    lenient: bool = typer.Option(
        False, "--lenient", help="Skip and count malformed rows instead of stopping."
    ),
    backbone: str = typer.Option("minilm", "--backbone", help="Tokenizer: registry name or HF path."),
    max_length: int = typer.Option(256, "--max-length", help="Count pairs longer than this many tokens."),
    no_tokens: bool = typer.Option(False, "--no-tokens", help="Skip token-length statistics."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of tables."),
) -> None:
    """Pairs per subset and split, drops and skips by reason, carved split sizes and token lengths."""
    if not data:
        raise RmtensionError("no data folder: pass --data or set RMTENSION_DATA")
    get_format(fmt)  # an unknown format is a one-line DataError, before anything is read
    cfg = DataConfig()  # the default split fractions and seed
    if fmt == "xstest":  # test sets only: no split; pairs and prompts per set and type instead
        xs = load_xstest(data, lenient=lenient)
        loaded = {"test": xstest_result(xs)}
        report: dict[str, Any] = {
            "data": data,
            "format": fmt,
            **load_account(loaded),
            "xstest": xstest_account(xs),
        }
    else:
        loaded = load_pairs(data, fmt=fmt, lenient=lenient)
        split = split_pairs({s: r.pairs for s, r in loaded.items()}, cfg.split, cfg.split_seed)
        report = {
            "data": data,
            "format": fmt,
            **load_account(loaded),
            "split_mode": split.mode,
            "splits": _split_counts(split),
        }
    if not no_tokens:
        from rmtension.model.backbones import load_tokenizer, resolve_backbone

        tok = load_tokenizer(resolve_backbone(backbone), max_length)
        pairs = [p for r in loaded.values() for p in r.pairs]
        report["tokens"] = token_stats(pairs, tok, max_length)
        report["tokens_backbone"], report["tokens_max_length"] = backbone, max_length
    typer.echo(json.dumps(report, indent=2) if as_json else render(report))


def _split_counts(split) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, pairs in split.pairs.items():
        for p in pairs:
            out.setdefault(p.subset, {"train": 0, "val": 0, "test": 0})[name] += 1
    return dict(sorted(out.items()))


def render(report: dict[str, Any]) -> str:
    """The report as aligned text blocks."""
    files = [
        [f, c["subset"], c["pairs"], _reasons(c["drops"]), _reasons(c["skipped"])]
        for f, c in report["per_file"].items()
    ]
    blocks = [
        f"data: {report['data']} (format {report['format']})",
        table(["file", "subset", "pairs", "dropped", "skipped"], files),
        f"drops by reason: {_reasons(report['drops'])}",
        f"skipped by reason: {_reasons(report['skipped'])}",
        f"flags on kept pairs: {_reasons(report['flags'])}",
    ]
    if "splits" in report:
        rows = [
            [s, report["split_mode"][s], c["train"], c["val"], c["test"]] for s, c in report["splits"].items()
        ]
        blocks.append(table(["subset", "split mode", "train", "val", "test"], rows))
    if "xstest" in report:
        xs = report["xstest"]
        rows = [[r["set"], r["type"], r["prompts"], r["pairs"]] for r in xs["by_type"]]
        rows += [[name, "(all)", xs["prompts"][name], xs["pairs"][name]] for name in xs["pairs"]]
        blocks.append(table(["set", "prompt type", "prompts", "pairs"], rows))
        blocks.append(f"excluded by reason: {_reasons(xs['excluded'])}")
    if "tokens" in report:
        stats = lambda t: [t["p50"], t["p90"], t["p99"], t["max"]]  # noqa: E731
        rows = [
            [s, t["pairs"], *stats(t["chosen"]), *stats(t["rejected"]), t["truncated"]]
            for s, t in report["tokens"].items()
        ]
        blocks.append(
            f"token lengths of rendered transcripts ({report['tokens_backbone']}, special tokens included):"
        )
        blocks.append(
            table(
                [
                    "subset",
                    "pairs",
                    "chosen p50",
                    "p90",
                    "p99",
                    "max",
                    "rejected p50",
                    "p90",
                    "p99",
                    "max",
                    f"pairs > {report['tokens_max_length']}",
                ],
                rows,
            )
        )
    return "\n\n".join(blocks)
