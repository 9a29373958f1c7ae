"""The report and the side-by-side comparison, on tiny in-process studies and on hand-made run files:
the fixed section list, "not run" lines, verdict rules, tables as CSV, paper-sized figures as PNG and
PDF, stale outputs pruned, and `rmtension compare`."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rmtension.cli import main
from rmtension.report.document import PARTS
from studykit import tiny_study

TOP = (
    [("summary", "Summary of findings")]
    + [(p.anchor, p.title) for p in PARTS]
    + [("provenance", "Provenance")]
)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two tiny studies that differ in the mixed objective: matched with two seeds, ratio 0.25 with one."""
    base = tmp_path_factory.mktemp("report")
    cfg = tiny_study(base)
    a, b = base / "matched", base / "ratio"
    assert main(["study", "--config", str(cfg), "--out", str(a)]) == 0
    assert (
        main(
            [
                "study",
                "--config",
                str(cfg),
                "--out",
                str(b),
                "data.mixed_mode=ratio",
                "data.mixed_ratio=0.25",
                "train.seeds=[0]",
            ]
        )
        == 0
    )
    return a, b


def _top_sections(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<section id="([^"]+)"><h2>([^<]+)</h2>', html)


def test_report_has_every_part_in_order_and_says_what_did_not_run(tiny_runs):
    run, _ = tiny_runs
    html, md = (run / "report.html").read_text(), (run / "report.md").read_text()
    assert _top_sections(html) == TOP
    assert re.findall(r"^## (.+)$", md, flags=re.M) == [t for _, t in TOP]
    for needle in (
        "Not run in this study (enable `neurons:` in the config).",
        "Not run in this study (enable `neurons:` and `ablation:` in the config).",
        "Not run in this study (enable `policy:`, `pm_halves:` and `bon:` or `rl:` in the config).",
        "Not run in this study (enable `combine:` in the config).",
        "Not run in this study (enable `audit:` in the config).",
    ):
        assert needle in md
    # self-contained: no external reference at all
    assert not re.search(r'(src|href)="(?!data:|#)', html)

    summary = md.split("## Data")[0]
    t = json.loads((run / "tension.json").read_text())
    sentences = [line for line in summary.splitlines() if line.startswith(("Tanwar", "Bai", "rmtension"))]
    assert all(
        re.search(r": \*\*(supported|non-zero but small|not supported|inconclusive|not run)\*\*\. ", s)
        for s in sentences
    )
    found = {f["id"]: f for f in json.loads((run / "findings.json").read_text())["findings"]}
    assert len(sentences) == len(found)
    # this run trains and evaluates RMs only: every neuron, optimisation, XSTest and conflict claim is not run
    ran = {"mixed_worse", "negative_transfer", "calibrated", "tradeoff"}
    not_run = {
        "neurons_identified", "neurons_shared", "neuron_sets_differ", "shared_outsized", "cross_ablation",
        "double_dissociation", "sqrt_kl", "train_test_gap", "avoidant_vs_misuse", "pcgrad_reduces_interference",
        "conflict_tracks_shared_neurons", "combined_keeps_both", "helpful_refusal_undervalued",
        "tension_is_length_prior",  # the synthetic replies ("good i" / "bad i") tie in length: not estimable
    }  # fmt: skip
    assert set(found) == ran | not_run
    assert {i for i, f in found.items() if f["verdict"] == "not run"} == not_run
    assert sum("**not run**" in s for s in sentences) == len(not_run)
    assert "set `data.xstest_path` to an XSTest folder" in next(s for s in sentences if "avoidant" in s)
    worse = next(s for s in sentences if "mixed RMs do worse" in s)
    for ts, d in t["interference"].items():
        assert (
            f"{ts} test {d['mixed_minus_best_single']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
            in worse
        )
    counts = re.search(
        r"(\d+) supported, (\d+) non-zero but small, (\d+) not supported, (\d+) inconclusive, (\d+) not run",
        summary,
    ).groups()
    assert sum(map(int, counts)) == len(found) and counts[4] == str(len(not_run))


def test_summary_opens_with_a_verdict_table_and_forest_plot_from_the_findings(tiny_runs):
    run, _ = tiny_runs
    found = json.loads((run / "findings.json").read_text())["findings"]
    table = pd.read_csv(run / "tables" / "summary_0.csv", keep_default_na=False)
    assert list(table.columns) == [
        "claim",
        "id",
        "verdict",
        "effect [95% CI]",
        "length-controlled [95% CI]",
        "decided on",
        "margin",
        "detectable effect",
    ]
    assert list(table["id"]) == [f["id"] for f in found] and list(table["verdict"]) == [
        f["verdict"] for f in found
    ]
    assert list(table["decided on"]) == [f["decided_on"] for f in found]
    for f, row in zip(found, table.to_dict("records")):
        if f["verdict"] == "not run":
            assert row["effect [95% CI]"] == "–" and row["detectable effect"] == "–"
            continue
        for part, e in f["effect"].items():  # each part's effect and CI, formatted from findings.json
            lo, hi = f["ci95"][part]
            assert f"{e:+.3f} [{lo:+.3f}, {hi:+.3f}]" in row["effect [95% CI]"]
        lc = f.get("length_controlled") or {}
        assert (row["length-controlled [95% CI]"] == "–") == (not lc)
        for part, d in lc.items():  # beside the raw one: each part's length-controlled estimate and CI
            if d["estimable"]:
                lo, hi = d["ci95"]
                assert f"{d['estimate']:+.3f} [{lo:+.3f}, {hi:+.3f}]" in row["length-controlled [95% CI]"]
            else:
                assert "not estimable" in row["length-controlled [95% CI]"]
        margin = "–" if f["min_effect"] is None else f"±{f['min_effect']:g}"
        post_hoc = " (post hoc)" if f["numbers"].get("margin_post_hoc") else ""
        assert row["margin"] == margin + post_hoc
        assert row["detectable effect"] == f"{f['min_detectable_effect']:.3f}"
    md = (run / "report.md").read_text()
    summary = md.split("## Data")[0]
    first_sentence = next(i for i, line in enumerate(summary.splitlines()) if line.startswith("Tanwar"))
    assert (
        summary.index("(`tables/summary_0.csv`)")
        < summary.index("findings_forest")
        < sum(len(line) + 1 for line in summary.splitlines()[:first_sentence])
    )


def test_every_table_is_a_csv_and_every_figure_a_paper_sized_png_and_pdf(tiny_runs):
    run, _ = tiny_runs
    md, html = (run / "report.md").read_text(), (run / "report.html").read_text()
    referenced = set(re.findall(r"\(`tables/([^`]+\.csv)`\)", md))
    on_disk = {p.name for p in (run / "tables").glob("*.csv")}
    assert referenced == on_disk and html.count("<table") == len(on_disk) >= 8
    t = json.loads((run / "tension.json").read_text())
    acc = pd.read_csv(run / "tables" / "tension_0.csv").set_index("RM")
    for rm, by in t["accuracy"].items():
        for ts, d in by.items():
            assert (
                acc.loc[rm, ts] == f"{d['mean']:.3f} ± {d['sd']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"
            )

    index = json.loads((run / "figures" / "index.json").read_text())
    pngs = sorted((run / "figures").glob("*.png"))
    assert {p.stem for p in pngs} == set(index) == {"findings_forest", "tension", "calibration", "training"}
    assert html.count('<img src="data:image/png;base64,') == len(pngs)
    for png in pngs:
        meta = index[png.stem]
        assert meta["width_in"] in (3.3, 6.9) and meta["min_font_pt"] >= 7 and meta["dpi"] >= 200
        with Image.open(png) as im:
            assert im.size == (round(meta["width_in"] * meta["dpi"]), round(meta["height_in"] * meta["dpi"]))
        pdf = png.with_suffix(".pdf").read_bytes()
        box = re.search(rb"/MediaBox \[ *0 0 ([\d.]+) ([\d.]+) *\]", pdf)
        assert pdf.startswith(b"%PDF") and float(box.group(1)) == pytest.approx(meta["width_in"] * 72)


def test_rebuilding_the_report_is_byte_identical_and_prunes_stale_outputs(tiny_runs):
    run, _ = tiny_runs
    (run / "figures" / "old_figure.png").write_bytes(b"x")
    (run / "figures" / "old_figure.pdf").write_bytes(b"x")
    (run / "tables" / "old_9.csv").write_text("a\n1\n")
    before = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (run / "figures").glob("*.p*")
        if p.stem != "old_figure"
    }
    assert main(["report", str(run)]) == 0
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (run / "figures").glob("*.p*")}
    assert after == before
    assert not (run / "tables" / "old_9.csv").exists()


def test_save_keeps_figures_paper_sized_and_readable(tmp_path):
    from rmtension.report.figures import DOUBLE_WIDTH, new_figure, plt, save

    with pytest.raises(ValueError, match="width"):
        new_figure(5.0)
    fig = plt.figure(figsize=(5.0, 2.0))
    with pytest.raises(ValueError, match="neither one column"):
        save(fig, tmp_path, "odd")
    fig, ax = new_figure(DOUBLE_WIDTH, 2.0)
    ax.text(0.5, 0.5, "tiny", fontsize=4)
    ax.plot([0, 1], label="line")
    ax.legend(fontsize=5)
    save(fig, tmp_path, "small_fonts")
    meta = json.loads((tmp_path / "figures" / "index.json").read_text())["small_fonts"]
    assert meta["min_font_pt"] == 7 and meta["width_in"] == DOUBLE_WIDTH
    assert (tmp_path / "figures" / "small_fonts.pdf").is_file()


def _write_run(root: Path, interference: dict, cross: tuple[list, list], config: dict | None = None) -> Path:
    """A run directory with only a tension.json (and optionally a config.yaml)."""
    import yaml

    root.mkdir(parents=True)
    cell = lambda m, lo, hi: {"mean": m, "sd": 0.0, "ci95": [lo, hi], "n": 100, "per_seed": [m]}  # noqa: E731
    acc = {
        "helpful": {"helpful": cell(0.7, 0.65, 0.75), "harmless": cell(0.5, *cross[0])},
        "harmless": {"helpful": cell(0.5, *cross[1]), "harmless": cell(0.7, 0.65, 0.75)},
        "mixed": {"helpful": cell(0.6, 0.55, 0.65), "harmless": cell(0.6, 0.55, 0.65)},
    }
    cal = {rm: {ts: {"ece": 0.02, "points": []} for ts in by} for rm, by in acc.items()}
    from scipy import stats

    # two-sided p from the CI by the normal approximation, as a bootstrap p would be
    p = lambda d, lo, hi: float(2 * stats.norm.sf(abs(d) / ((hi - lo) / 3.92)))  # noqa: E731
    inter = {
        ts: {
            "mixed_minus_best_single": d,
            "ci95": [lo, hi],
            "best_single": "helpful",
            "p_value": p(d, lo, hi),
        }
        for ts, (d, lo, hi) in interference.items()
    }
    (root / "tension.json").write_text(
        json.dumps({"accuracy": acc, "interference": inter, "calibration": cal, "method": {"ci": "test"}})
    )
    if config is not None:
        (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.mark.parametrize(
    "interference, cross, worse, tradeoff",
    [
        (
            {"helpful": (-0.09, -0.13, -0.05), "harmless": (-0.05, -0.10, 0.01)},
            ([0.35, 0.45], [0.45, 0.55]),
            "supported",
            "supported",
        ),
        (
            {"helpful": (-0.02, -0.10, 0.06), "harmless": (0.01, -0.03, 0.05)},
            ([0.45, 0.55], [0.40, 0.6]),
            "inconclusive",
            "inconclusive",
        ),
        (
            {"helpful": (0.03, 0.01, 0.05), "harmless": (-0.01, -0.04, 0.02)},
            ([0.52, 0.6], [0.51, 0.58]),
            "not supported",
            "not supported",
        ),
        (  # significant alone (p 0.03) but not after Holm's correction over the two test sets (0.06)
            {"helpful": (-0.0428, -0.0820, -0.0036), "harmless": (0.0, -0.1, 0.1)},
            ([0.52, 0.6], [0.51, 0.58]),
            "inconclusive",
            "not supported",
        ),
    ],
)
def test_verdicts_of_the_tension_claims_follow_their_criteria(tmp_path, interference, cross, worse, tradeoff):
    from rmtension.bon.claims import tradeoff as trade
    from rmtension.tension.claims import mixed_worse

    run = _write_run(tmp_path / "r", interference, cross)
    assert mixed_worse(run).verdict == worse
    f = trade(run)
    assert f.verdict == tradeoff and f"{cross[0][0]:.3f}, {cross[0][1]:.3f}]" in f.evidence


def test_optimisation_claims_read_the_fits_and_say_when_they_did_not_run(tmp_path):
    from rmtension.rl.claims import sqrt_kl
    from rmtension.study import findings

    run = _write_run(
        tmp_path / "r",
        {"helpful": (-0.1, -0.2, -0.05)},
        ([0.4, 0.45], [0.4, 0.45]),
        config={"name": "x", "train": {"seeds": [0]}},
    )
    fs = {f.claim: f for f in findings(run)}
    assert fs["reward grows about linearly in sqrt(KL)"].evidence == (
        "Not run in this study (enable `policy:`, `pm_halves:` and `bon:` or `rl:` in the config)."
    )
    assert fs["many neurons are shared between the objectives"].verdict == "not run"

    (run / "config.yaml").write_text("name: x\nbon: {n_samples: 4}\n")
    assert "Enabled in the config, but `bon_fit.json`" in sqrt_kl(run).evidence

    # the rules on constructed bon_fit.json / rl.json: test_optimise_stage.py::test_optimisation_findings_follow_their_rules


def test_calibration_ci_comes_from_the_per_pair_scores(tmp_path):
    from rmtension.report.core import calibration_cis

    run = tmp_path / "r"
    n = 200
    for rm, sign in (("helpful", 1.0), ("harmless", -1.0)):  # confident and right; confident and wrong
        for seed in (0, 1):
            d = run / "eval" / rm / f"seed{seed}"
            d.mkdir(parents=True)
            pd.DataFrame(
                {"pair_id": range(n), "subset": "s", "r_chosen": sign * 20.0, "r_rejected": 0.0}
            ).to_csv(d / "helpful.csv", index=False)
    cis = calibration_cis(run)
    assert set(cis) == {("helpful", "helpful"), ("harmless", "helpful")}
    assert cis[("helpful", "helpful")][1] < 1e-6 and cis[("harmless", "helpful")][0] > 0.999


def test_vectorised_ece_bootstrap_equals_calibration_on_each_resample():
    from rmtension.report.core import ece_replicates
    from rmtension.stats.bootstrap import calibration

    rng = np.random.default_rng(3)
    margins = rng.normal(0.4, 2.0, size=(3, 157))
    idx = rng.integers(0, 157, size=(25, 157))
    expected = [calibration(margins[:, i].ravel(), 7)["ece"] for i in idx]
    np.testing.assert_allclose(ece_replicates(margins, 7, idx), expected, rtol=0, atol=1e-12)
    whole = ece_replicates(margins, 7, np.arange(157)[None])[0]
    assert whole == pytest.approx(calibration(margins.ravel(), 7)["ece"], abs=1e-12)


def test_compare_puts_runs_side_by_side(tiny_runs, tmp_path, capsys):
    a, b = tiny_runs
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    html = (out / "report.html").read_text()
    assert [s for s, _ in _top_sections(html)] == [
        "runs",
        "accuracy",
        "interference",
        "calibration",
        "claims",
        "provenance",
    ]
    runs = pd.read_csv(out / "tables" / "runs_0.csv").set_index("run")
    assert runs.loc["matched", "mixed"] == "matched" and runs.loc["ratio", "mixed"] == "ratio (0.25)"
    assert list(runs["seeds"]) == [2, 1]
    diff = pd.read_csv(out / "tables" / "runs_1.csv", dtype=str).set_index("key")
    assert (diff.loc["data.mixed_mode", "matched"], diff.loc["data.mixed_mode", "ratio"]) == (
        "matched",
        "ratio",
    )
    assert diff.loc["data.mixed_ratio", "ratio"] == "0.25" and len(diff.loc["train.seeds"].unique()) == 2
    assert "name" not in diff.index and "model.backbone" not in diff.index  # equal keys are left out
    acc = pd.read_csv(out / "tables" / "accuracy_0.csv")
    n_cells = len(
        {
            (rm, ts)
            for run in (a, b)
            for rm, by in json.loads((run / "tension.json").read_text())["accuracy"].items()
            if rm in ("helpful", "harmless", "mixed")
            for ts in by
        }
    )
    assert list(acc.columns) == ["RM", "test set", "matched", "ratio"] and len(acc) == n_cells
    for label, run in (("matched", a), ("ratio", b)):
        t = json.loads((run / "tension.json").read_text())
        for row in acc.itertuples(index=False):
            d = t["accuracy"][row[0]][row[1]]
            assert getattr(row, label) == f"{d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"
    claims = pd.read_csv(out / "tables" / "claims_0.csv")
    # the verdicts of run b as its own report states them, read back from its report.md
    own = re.findall(
        r": \*\*(supported|not supported|inconclusive|not run)\*\*\. ", (b / "report.md").read_text()
    )
    assert list(claims["ratio"]) == own and len(own) == len(
        json.loads((b / "findings.json").read_text())["findings"]
    )
    with Image.open(out / "figures" / "compare_accuracy.png") as im:
        assert im.size[0] == round(6.9 * 200)
    assert (out / "figures" / "compare_interference.pdf").is_file()
    assert html.count('<img src="data:image/png;base64,') == 2


def test_compare_errors_are_one_line(tiny_runs, tmp_path, capsys):
    a, _ = tiny_runs
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.yaml").write_text("name: half\n")
    for argv, needle in (
        ([str(a), str(half)], "no tension.json"),
        ([str(a)], "at least two"),
        ([str(a), str(a)], "must not be one of the runs"),
    ):
        out = ["--out", str(a)] if "must not" in needle else ["--out", str(tmp_path / "o")]
        assert main(["compare", *argv, *out]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_run_labels_tell_same_named_runs_apart():
    from rmtension.report.compare import run_labels

    assert run_labels([Path("/x/minilm"), Path("/x/smollm2")]) == ["minilm", "smollm2"]
    assert run_labels([Path("/a/run"), Path("/b/run")]) == ["a/run", "b/run"]
    assert run_labels([Path("/a/run"), Path("/a/run")]) == ["a/run #1", "a/run #2"]
    assert np.unique(run_labels([Path("/a/run"), Path("/b/run"), Path("/c/x")])).size == 3
