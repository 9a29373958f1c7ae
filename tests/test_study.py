"""The study end to end on a tiny model and synthetic HH files: the run-directory contract, stage
caching, and the CLI's one-line errors."""

from __future__ import annotations

import gzip
import json
import re
import shutil

import pandas as pd
import pytest
import yaml

from findings_schema import check_findings
from rmtension.cli import main


@pytest.fixture(scope="module")
def setup(tiny_study_run):
    base, cfg, _ = tiny_study_run
    return base, cfg


@pytest.fixture(scope="module")
def study_run(tiny_study_run):
    """The session's tiny study; a test that changes files works on a copy (no test needs another's leftovers)."""
    return tiny_study_run[2]


def network_references(html: str) -> list[str]:
    """Everything in `html` that would make a browser fetch from elsewhere: a remote src/href/action,
    a remote CSS url() or @import, a srcset entry."""
    remote = r"(?:https?:)?//"
    patterns = [
        rf"(?:src|href|action|srcset|poster|data)\s*=\s*[\"']?\s*{remote}[^\"'\s>]*",
        rf"url\(\s*[\"']?\s*{remote}[^)]*\)",
        r"@import\b[^;]*",
    ]
    return [m.group(0) for p in patterns for m in re.finditer(p, html, flags=re.IGNORECASE)]


def test_network_references_finds_every_kind_of_remote_fetch():
    page = (
        '<a href="#sec">x</a><img src="data:image/png;base64,AA"> see https://arxiv.org/abs/1 in text'
        '<img src="https://x.org/a.png"><link href=//cdn.net/s.css><style>b{background:url("http://y/z")}'
        '@import "q.css";</style>'
    )
    assert network_references(page) == [
        'src="https://x.org/a.png',
        "href=//cdn.net/s.css",
        'url("http://y/z")',
        '@import "q.css"',
    ]


def run(*argv) -> int:
    return main([str(a) for a in argv])


def test_study_writes_the_run_directory_contract_and_skips_completed_stages(
    setup, study_run, tmp_path, capsys
):
    _, cfg = setup
    out = tmp_path / "run"
    shutil.copytree(study_run, out)  # reruns below change files; the shared run stays as made
    for rel in [
        "config.yaml",
        "data/summary.json",
        "data/splits.json",
        "tension.json",
        "report.md",
        "report.html",
    ]:
        assert (out / rel).is_file(), rel
    splits = json.loads((out / "data/splits.json").read_text())
    test_ids = {t: set(v) for t, v in splits["test_sets"].items()}
    for by in splits["splits"].values():
        assert not (set(by["train"]) & (test_ids["helpful"] | test_ids["harmless"]))
    for objective in ("helpful", "harmless", "mixed"):
        for seed in (0, 1):
            d = out / "rm" / objective / f"seed{seed}"
            assert (d / "config.json").is_file() and (d / "model.safetensors").is_file()
            metrics = json.loads((d / "metrics.json").read_text())
            assert metrics["pairs_per_s"] > 0 and metrics["loss"] and metrics["val_accuracy"]
    table = json.loads((out / "tension.json").read_text())
    # the three objectives and the two dilution controls (train.controls is on by default)
    assert set(table["accuracy"]) == {"helpful", "harmless", "mixed", "helpful_half", "harmless_half"}
    for rm, by in table["accuracy"].items():
        assert set(by) == {"helpful", "harmless"}
        for cell in by.values():
            assert len(cell["per_seed"]) == 2 and cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1]
    for t, ids in test_ids.items():
        assert (
            table["accuracy"]["mixed"][t]["n"]
            == len(ids)
            == len(pd.read_csv(out / "eval/mixed/seed1" / f"{t}.csv"))
        )
    sub = table["accuracy"]["helpful"]["helpful"]["per_subset"]
    assert set(sub) == {"helpful-base", "helpful-online"}
    assert sum(d["n"] for d in sub.values()) == table["accuracy"]["helpful"]["helpful"]["n"]
    assert table["accuracy"]["helpful"]["helpful"]["mean_margin"] > 0
    for t, d in table["interference"].items():
        best = max(table["accuracy"]["helpful"][t]["mean"], table["accuracy"]["harmless"][t]["mean"])
        assert d["mixed_minus_best_single"] == pytest.approx(table["accuracy"]["mixed"][t]["mean"] - best)
        half = table["accuracy"][d["best_single"] + "_half"][t]["mean"]
        assert d["dilution"]["estimate"] == pytest.approx(half - best)
        assert d["negative_transfer"]["estimate"] == pytest.approx(
            table["accuracy"]["mixed"][t]["mean"] - half
        )
    assert set(table["calibration"]["helpful"]["helpful"]) >= {"ece"}
    # the learnable signal is learnt: each single-objective RM beats chance on its own test set
    assert table["accuracy"]["helpful"]["helpful"]["mean"] > 0.7
    assert table["accuracy"]["harmless"]["harmless"]["mean"] > 0.7
    html = (out / "report.html").read_text()
    assert "<img" in html
    assert network_references(html) == []

    # a second run reuses every stage: trained models are not touched
    stamp = {p: p.stat().st_mtime_ns for p in (out / "rm").rglob("model.safetensors")}
    capsys.readouterr()
    assert run("study", "--config", cfg, "--out", out) == 0
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    assert "training" not in capsys.readouterr().out

    # a changed evaluation setting recomputes the table but not the models
    before = json.loads((out / "tension.json").read_text())
    assert run("study", "--config", cfg, "--out", out, "eval.ci=0.8") == 0
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    after = json.loads((out / "tension.json").read_text())
    assert after["accuracy"]["helpful"]["helpful"]["mean"] == before["accuracy"]["helpful"]["helpful"]["mean"]
    lo80, hi80 = after["accuracy"]["helpful"]["helpful"]["ci95"]
    lo95, hi95 = before["accuracy"]["helpful"]["helpful"]["ci95"]
    assert hi80 - lo80 <= hi95 - lo95


def test_report_command_rebuilds_from_files(study_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(study_run, out)
    (out / "report.md").unlink()
    assert run("report", out) == 0
    assert "tension" in (out / "report.md").read_text().lower()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["study", "--config", "nope.yaml"], "nope.yaml"),
        (["study", "--config", "{cfg}", "train.lrr=1"], "train.lrr: unknown key"),
        (["study", "--config", "{cfg}", "train.trainable=some"], "train.trainable"),
        (["report", "{base}"], "not a run directory"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(setup, capsys, argv, needle):
    base, cfg = setup
    argv = [a.format(cfg=cfg, base=base) for a in argv]
    assert run(*argv) != 0
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_data_folder_is_a_clear_error(setup, capsys, tmp_path):
    base, cfg = setup
    assert run("study", "--config", cfg, "--out", tmp_path / "r", f"data.path={tmp_path / 'absent'}") != 0
    err = capsys.readouterr().err
    assert "absent" in err and "Traceback" not in err


def test_data_summary_command(setup, capsys):
    base, _ = setup
    # expected counts from the files themselves, one row per line
    lines = {}
    for f in sorted((base / "hh").glob("*/test.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            lines[f.parent.name] = sum(1 for line in fh if line.strip())
    assert run("data", "summary", "--data", base / "hh", "--no-tokens", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    per_file = {d["subset"]: d for d in report["per_file"].values()}
    for subset, n_lines in lines.items():  # every line is a pair, a counted drop or a counted skip
        d = per_file[subset]
        assert d["pairs"] + sum(d["drops"].values()) + sum(d["skipped"].values()) == n_lines
        assert sum(report["splits"][subset].values()) == d["pairs"]
    lines = {subset: d["pairs"] for subset, d in per_file.items()}
    assert run("data", "summary", "--data", base / "hh", "--no-tokens") == 0
    out = capsys.readouterr().out
    for subset, n in lines.items():  # the table shows each subset's count on its own row
        assert any(subset in row and str(n) in row.split() for row in out.splitlines()), (subset, out)


@pytest.mark.real
def test_smoke_config_on_real_data_and_minilm(smoke_run):
    """CI runs the shipped smoke config end to end (a few minutes, shared with the browser test)."""
    out = smoke_run
    table = json.loads((out / "tension.json").read_text())
    assert set(table["accuracy"]) == {
        "helpful",
        "harmless",
        "mixed",
        "mixed_pcgrad",
        "helpful_half",
        "harmless_half",
        "two_head:helpful",
        "two_head:harmless",
        "mixed_r0.25",  # the data-ratio sweep's own RMs (0, 0.5 and 1 are the three objectives')
        "mixed_r0.75",
    }
    assert (out / "report.html").stat().st_size > 10_000
    # the frontier of every way to combine the objectives, and its figure in the report
    front = pd.read_csv(out / "combine" / "frontier.csv")
    assert {"reward_interp", "two_head_dial", "gated", "gated_mean", "weight_interp"} <= set(front["method"])
    assert "combine_frontier" in json.loads((out / "figures" / "index.json").read_text())
    # gradient conflict of both mixed-data RMs, every seed, and PCGrad's difference on every test set
    conflict = json.loads((out / "conflict.json").read_text())["rms"]
    assert set(conflict) == {"mixed", "mixed_pcgrad"}
    seeds = yaml.safe_load((out / "config.yaml").read_text())["train"]["seeds"]
    for rm in conflict:
        for seed in seeds:
            rows = pd.read_csv(out / "rm" / rm / f"seed{seed}" / "conflict.csv")
            assert set(rows["block"]) == set(conflict[rm]["blocks"]) and rows["cosine"].between(-1, 1).all()
    assert set(table["pcgrad"]) == set(table["baselines"])
    # XSTest rows (every pair, prompt-level CIs), the length baselines of every test set, the claim
    sets = {"helpful", "harmless", "xstest-should-respond", "xstest-should-refuse"}
    assert set(table["accuracy"]["helpful"]) == sets == set(table["baselines"])
    for ts, b in table["baselines"].items():
        n = table["accuracy"]["mixed"][ts]["n"]
        assert b["n"] == n and b["longer"] + b["shorter"] == pytest.approx(1.0)
        for by in table["accuracy"].values():
            assert 0 <= by[ts]["length_matched"]["n"] <= n
    counts = json.loads((out / "data" / "summary.json").read_text())["xstest"]["pairs"]
    assert table["accuracy"]["helpful"]["xstest-should-respond"]["n"] == counts["xstest-should-respond"] > 0
    xs = table["xstest"]
    respond = {rm: table["accuracy"][rm]["xstest-should-respond"]["mean"] for rm in ("helpful", "harmless")}
    assert xs["avoidant"]["estimate"] == pytest.approx(respond["helpful"] - respond["harmless"])
    found = {f["id"]: f for f in check_findings(out)}  # every entry follows the schema
    assert found["avoidant_vs_misuse"]["verdict"] in {"supported", "not supported", "inconclusive"}
    assert found["combined_keeps_both"]["verdict"] != "not run"
    assert (
        found["helpful_refusal_undervalued"]["verdict"] != "not run"
    )  # the smoke config audits the shipped suite
    assert (out / "audit.json").is_file() and (out / "audit" / "harmless" / "seed0.csv").is_file()
    assert "avoidant_misuse" in json.loads((out / "figures" / "index.json").read_text())
    ablated = pd.read_csv(out / "ablation.csv")
    assert {"xstest-should-respond", "xstest-should-refuse"} <= set(ablated["test_set"])
    # per-stage wall seconds of the run: every stage the config turns on, in the order it ran
    timings = json.loads((out / "timings.json").read_text())
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    on = lambda s: cfg.get(s) is not None and cfg[s].get("enabled", True)  # noqa: E731
    after = [s for s in ("audit", "combine", "neurons", "ablation", "pm_halves", "bon", "rl") if on(s)]
    assert list(timings["stages"]) == ["prepare", "train", "eval", "tension", "conflict", *after, "report"]
    assert all(v >= 0 for v in timings["stages"].values())
    # each value is rounded to 0.01 s, so the sum may pass the total by half a step per value
    assert sum(timings["stages"].values()) <= timings["detail"]["total_s"] + 0.005 * (
        len(timings["stages"]) + 1
    )


def test_help_config_lists_every_key_with_its_docstring(capsys):
    from rmtension.config import StudyConfig
    from studykit import config_keys

    assert run("study", "--help-config") == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    expected = [(key, " ".join(doc.split())) for key, doc in config_keys(StudyConfig)]
    assert len(lines) == len(expected)
    for (key, doc), line in zip(expected, lines):
        assert line.startswith((key + " (", key + ":")) and line.endswith(doc), (key, line)
    assert any(line.startswith("ablation.") for line in lines)  # optional sections are listed too
