"""PM halves, best-of-n and RL as study stages, end to end on tiny models and synthetic HH files."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from rmtension.cli import main
from rmtension.pm_halves.stage import split_halves
from studykit import tiny_config
from tiny import save_tiny


def test_split_halves_keeps_prompt_groups_together_and_balances_sizes():
    keys = [f"g{i % 7}" for i in range(40)] + [f"solo{i}" for i in range(9)]
    a, b = split_halves(keys, seed=3)
    assert not set(a) & set(b) and sorted(a + b) == list(range(len(keys)))
    assert not {keys[i] for i in a} & {keys[i] for i in b}
    assert abs(len(a) - len(b)) <= 6  # at most the largest group
    assert (a, b) == split_halves(keys, seed=3) and (a, b) != split_halves(keys, seed=4)
    ca, cb = split_halves(keys, seed=3, cap=10)
    assert len(ca) <= 10 and len(cb) <= 10 and not set(ca) & set(cb)


def add_official_train(root, subset: str, reuse: int, fresh: int) -> set[str]:
    """Give `subset` an official train file: `reuse` pairs that open with the same prompts as its test
    file's first pairs (the official HH-RLHF files share prompts like this), and `fresh` new ones.
    Returns the prompt-group keys of the train file."""
    import gzip
    import hashlib

    with gzip.open(root / subset / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        test = [json.loads(line) for line in f]
    rows = [{"chosen": r["chosen"] + " again", "rejected": r["rejected"] + " again"} for r in test[:reuse]]
    for i in range(fresh):
        ctx = f"\n\nHuman: train-only question {i}\n\nAssistant:"
        rows.append({"chosen": f"{ctx} sorry", "rejected": f"{ctx} sure"})
    with gzip.open(root / subset / "train.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    first_turn = lambda text: text.split("\n\nHuman: ", 1)[1].split("\n\nAssistant:", 1)[0]  # noqa: E731
    return {hashlib.sha1(first_turn(r["chosen"]).strip().encode()).hexdigest() for r in rows}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("optimise")
    cfg = tiny_config(
        base,
        name="tiny-optimise",
        train={"lr": 1e-3},
        policy={
            "backbone": str(save_tiny(base / "policy", "llama", causal=True)),
            "precision": "fp32",
            "max_new_tokens": 6,
            "max_prompt_tokens": 48,
            "batch_size": 8,
        },
        pm_halves={},
        bon={"n_prompts": 4, "n_samples": 6, "bootstrap": 100, "n_example_prompts": 2, "n_examples": 2},
        rl={
            "objectives": ["helpful", "mixed"],
            "steps": 2,
            "prompts_per_step": 2,
            "k": 2,
            "max_new_tokens": 5,
            "max_prompt_tokens": 48,
            "n_prompts": 4,
            "lr": 1e-3,
            "trainable": "top:1",
            "bf16": False,
            "seeds": [0, 1],
            "eval_every": 1,
            "eval_prompts": 4,
            "eval_k": 2,
            "bootstrap": 200,
        },
        combine={"methods": ["two_head_dial", "gated"], "grid": 3, "bootstrap": 100},
        report={"enabled": False},
    )
    # 70 of harmless-base's 80 test prompts also open official training pairs
    add_official_train(base / "hh", "harmless-base", reuse=70, fresh=30)
    path = base / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = base / "run"
    assert main(["study", "--config", str(path), "--out", str(out)]) == 0
    return out, path


def test_stages_write_the_issue_outputs(study):
    out, _ = study
    for o in ("helpful", "harmless", "mixed"):
        halves = json.loads((out / "pm" / o / "halves.json").read_text())
        a, b = (set(halves["halves"][h]["pair_ids"]) for h in ("train", "test"))
        assert a and b and not a & b
        for h in ("train", "test"):
            assert (out / "pm" / o / h / "model.safetensors").is_file()
    samples = pd.read_parquet(out / "bon" / "samples.parquet")
    assert len(samples) == 4 * 6
    judges = {f"pm_{h}_{o}" for h in ("train", "test") for o in ("helpful", "harmless", "mixed")} | {
        "rm_helpful",
        "rm_harmless",
        "rm_mixed",
    }
    assert judges <= set(samples.columns) and {"prompt_id", "response"} <= set(samples.columns)
    assert samples[sorted(judges)].notna().all().all()
    table = pd.read_csv(out / "bon.csv")
    assert list(table.columns[:7]) == [
        "objective",
        "n",
        "kl_bound",
        "sqrt_kl",
        "reward_train_pm",
        "reward_test_pm",
        "reward_other_objective",
    ]
    assert sorted(table["n"].unique()) == [1, 2, 4, 6]
    first = table[table["n"] == 1]
    np.testing.assert_allclose(first["reward_train_pm"], 0, atol=1e-9)  # z-units: n = 1 is the sample mean
    assert table[table["objective"] == "mixed"]["reward_other_objective"].isna().all()
    for o, t in table.groupby("objective"):
        assert np.all(np.diff(t["reward_train_pm"]) >= -1e-9), o  # the selector's own reward never falls
    fit = json.loads((out / "bon_fit.json").read_text())
    f = fit["objectives"]["helpful"]
    assert {"curves", "slope_ci", "gao_test_pm", "gap", "gap_swapped", "heldout_curve"} <= set(f)
    assert f["heldout_curve"] == "reward_test_pm" and "upper bound" in fit["kl"]
    assert set(f["curves"]["reward_test_pm"]["forms"]) == {"sqrt_kl", "kl", "log_n"}
    lo, hi = f["slope_ci"]["reward_test_pm"]
    assert lo <= f["curves"]["reward_test_pm"]["forms"]["sqrt_kl"]["slope"] <= hi
    for g in (f["gap"], f["gap_swapped"]):
        assert g["n"] == [1, 2, 4, 6] and g["gap"][0] == pytest.approx(0, abs=1e-9)
        np.testing.assert_allclose(np.array(g["gap"]) - np.array(g["rtm"]), g["excess"], atol=1e-9)
    # within-prompt z: the n = 1 curve is 0 for every judge, and gap = bon.csv's train - test columns
    np.testing.assert_allclose(
        first[[c for c in first.columns if c.startswith("reward_")]].fillna(0), 0, atol=1e-9
    )
    t = table[table["objective"] == "helpful"]
    np.testing.assert_allclose(t["reward_train_pm"] - t["reward_test_pm"], f["gap"]["gap"], atol=1e-9)
    frontier = pd.read_csv(out / "frontier.csv")
    w = frontier[frontier["kind"] == "weighted"]
    assert (frontier["judged_by"] == "pm_test").all()
    assert {"pm_train_helpful", "pm_train_harmless", "rm_helpful", "rm_harmless", "rm_mixed"} <= set(
        frontier["selector"]
    )
    assert not any(sel.startswith("pm_test") for sel in frontier["selector"])  # a judge never selects
    assert len(w) == 11
    examples = json.loads((out / "bon" / "examples.json").read_text())
    assert len(examples["prompts"]) == 2 and len(examples["prompts"][0]["n1"]) == 2
    rl = pd.read_csv(out / "rl.csv")
    assert list(rl["objective"]) == ["helpful"] * 4 + ["mixed"] * 4 and list(rl["seed"]) == [0, 0, 1, 1] * 2
    for col in ("step", "kl", "reward_train_pm", "reward_test_pm", "reward_other_objective"):
        assert col in rl.columns
    assert (rl[rl["step"] == 0]["kl"] == 0).all()
    assert rl[rl["objective"] == "helpful"]["reward_other_objective"].notna().all()
    ev = pd.read_csv(out / "rl_eval.csv")
    assert len(ev) == 2 * 2 * 3 * 4 * 2  # objectives x seeds x evaluations (steps 0, 1, 2) x prompts x k
    assert (ev[ev["step"] == 0]["kl"] == 0).all() and set(ev["step"]) == {0, 1, 2}
    summary = json.loads((out / "rl.json").read_text())
    for o in ("helpful", "mixed"):
        sm = summary[o]
        assert sm["steps"] == 2 and sm["seeds"] == [0, 1] and sm["eval_steps"] == [0, 1, 2]
        assert sm["trend_x"] == "sqrt(KL)" and sm["trend_judge"] == "reward_train_pm"
        assert np.isfinite(sm["trend_ci95"]).all() and set(sm["by_seed"]) == {"0", "1"}
        assert sm["gap"]["step"] == 2 and {"gap", "rtm", "excess", "excess_ci_low", "rho"} <= set(sm["gap"])
    assert "reward_other_objective" not in summary["mixed"]["curves"]
    prompts = json.loads((out / "rl" / "prompts.json").read_text())
    assert len(prompts["eval"]) == 4 and prompts["train"]
    assert not {p["group"] for p in prompts["eval"]} & {p["group"] for p in prompts["train"]}


def test_best_of_n_also_picks_with_the_two_head_dial_and_the_gate(study):
    """The combined judges pick among the same samples (`rmtension.judges.combined`): the dial's ends pick
    as the heads alone do, since standardising a head keeps each prompt's order."""
    out, _ = study
    samples = pd.read_parquet(out / "bon" / "samples.parquet")
    assert {"rm_two_head_helpful", "rm_two_head_harmless"} <= set(samples.columns)
    front = pd.read_csv(out / "frontier.csv").set_index("selector")
    combined = front[front["kind"] == "combined"]
    assert set(combined.index) == {
        "two_head_dial w=0.00",
        "two_head_dial w=0.50",
        "two_head_dial w=1.00",
        "gated",
    }
    cols = ["helpful", "harmless"]
    np.testing.assert_allclose(
        front.loc["two_head_dial w=1.00", cols], front.loc["rm_two_head_helpful", cols]
    )
    np.testing.assert_allclose(
        front.loc["two_head_dial w=0.00", cols], front.loc["rm_two_head_harmless", cols]
    )
    assert np.isfinite(front.loc["gated", cols].to_numpy(float)).all()
    judge = json.loads((out / "combine" / "judge.json").read_text())
    assert set(judge["standardisers"]) == {"helpful", "harmless"} and len(judge["gate"]["weight"]) > 0


def test_a_second_run_skips_every_optimisation_stage(study, capsys):
    out, path = study
    before = {
        p: p.stat().st_mtime_ns
        for p in [
            out / "bon" / "samples.parquet",
            out / "rl.csv",
            out / "rl.json",
            out / "pm" / "helpful" / "halves.json",
        ]
    }
    capsys.readouterr()
    assert main(["study", "--config", str(path), "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "training pm_" not in log and "sampling" not in log and "RL (RLOO)" not in log
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_bon_without_pm_halves_is_a_config_error(study, capsys):
    _, path = study
    assert main(["study", "--config", str(path), "pm_halves=null"]) == 2
    assert "pm_halves" in capsys.readouterr().err


def test_judge_panel_shared_trunk_matches_each_judge_run_in_full(tmp_path):
    import torch

    from rmtension.judges.panel import JudgePanel
    from rmtension.model.scoring import score_texts
    from tiny import tiny_reward_model, tiny_tokenizer

    tok = tiny_tokenizer("bert")
    paths, models = {}, {}
    for j in range(2):
        m = tiny_reward_model("bert", layers=3)
        torch.manual_seed(10 + j)
        with torch.no_grad():  # judges differ only above the frozen trunk, as trained RMs do
            for p in list(m.bert.encoder.layer[2].parameters()) + list(m.classifier.parameters()):
                p.add_(0.3 * torch.randn_like(p))
        m.save_pretrained(tmp_path / f"j{j}")
        tok.save_pretrained(tmp_path / f"j{j}")
        paths[f"j{j}"], models[f"j{j}"] = tmp_path / f"j{j}", m
    texts = [f"\n\nHuman: question {i} " + "x" * (3 * i) + f"\n\nAssistant: answer {i}" for i in range(7)]
    panel = JudgePanel(paths, tok, 48, "top:1", bf16=False, batch_size=3)
    assert panel.shared
    got = panel.score_texts(texts)
    for name, m in models.items():
        np.testing.assert_allclose(
            got[name], score_texts(m, tok, texts, 48, batch_size=4, bf16=False), atol=1e-5
        )
    assert not np.allclose(got["j0"], got["j1"])
    full = JudgePanel(paths, tok, 48, "all", bf16=False, batch_size=3)
    assert not full.shared
    np.testing.assert_allclose(full.score_texts(texts)["j1"], got["j1"], atol=1e-5)


def test_report_sections_state_the_verdicts_with_numbers(study):
    from rmtension.study import write_study_report as write_report

    out, _ = study
    write_report(out)
    md = (out / "report.md").read_text()
    for title in (
        "Best-of-n against a learned judge",
        "RL against pm_train",
        "Helpful-harmless frontier",
        "What over-optimisation looks like",
    ):
        assert f"### {title}" in md
    assert "## Best-of-n and RL\n\n### Best-of-n against a learned judge" in md
    for claim in (
        "reward grows about linearly in sqrt(KL)",
        "the training PM rates the policy above a held-out PM",
    ):
        assert re.search(re.escape(claim) + r": \*\*(supported|not supported|inconclusive)\*\*", md), claim
    verdict = r"\*\*(supported|not supported|inconclusive)\*\*"
    # best-of-n per objective (3), RL per objective (2)
    assert len(re.findall(r"reward linear in sqrt\(KL\) is " + verdict, md)) == 3 + 2
    assert len(re.findall(r"the train/test gap beyond regression to the mean is " + verdict, md)) == 3 + 2
    assert md.count("Roles swapped (pm_test selects, pm_train judges)") == 3
    assert "ΔAIC" in md and "upper bound" in md and "regression to the mean (ρ̂ = " in md
    assert (
        "Functional forms of each best-of-n curve" in md
        and "Functional forms of each held-out RL curve" in md
    )
    assert "read by the held-out PMs pm_test_helpful and pm_test_harmless" in md
    assert "across 2 seeds the trend runs from" in md
    for fig in ("bon", "rl", "frontier"):
        assert (out / "figures" / f"{fig}.png").is_file()
    assert "best-of-6 by pm_train_helpful #1" in md


def test_cli_policy_sample_bon_and_rl(study, tmp_path, capsys):
    import shutil

    run, path = study
    out = tmp_path / "run"
    shutil.copytree(run, out)
    jsonl = tmp_path / "s.jsonl"
    assert (
        main(
            [
                "policy",
                "sample",
                "--config",
                str(path),
                "--prompt",
                "hello there",
                "--prompt",
                "why?",
                "--n",
                "3",
                "--out",
                str(jsonl),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 6 and {r["prompt"] for r in rows} == {"hello there", "why?"}
    capsys.readouterr()
    assert main(["policy", "sample", "--config", str(path), "--n-prompts", "2", "--n", "1"]) == 0
    assert capsys.readouterr().out.count("--- sample 0") == 2
    assert main(["bon", "--config", str(path), "--out", str(out), "bon.n_samples=4"]) == 0
    log = capsys.readouterr().out
    assert "training pm_" not in log and "sampling 4 responses" in log and "ΔAIC" in log
    assert sorted(pd.read_csv(out / "bon.csv")["n"].unique()) == [1, 2, 4]
    assert (
        main(
            [
                "rl",
                "--config",
                str(path),
                "--out",
                str(out),
                "bon.n_samples=4",
                "rl.steps=1",
                "rl.objectives=[harmless]",
            ]
        )
        == 0
    )
    assert list(pd.read_csv(out / "rl.csv")["objective"]) == ["harmless"] * 2  # one step, two seeds
    assert "sampling" not in capsys.readouterr().out  # `rl` reuses the best-of-n samples of the same config
    assert main(["policy", "sample", "--config", str(path), "--prompt", " "]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --prompt") and len(err.strip().splitlines()) == 1


def test_select_prompts_takes_equal_shares_of_distinct_user_ending_contexts():
    from rmtension.policy.prompts import select_prompts
    from rmtension.data.types import Pair, Turn

    def pairs(tag, n):
        out = [
            Pair(f"{tag}/{i}", (Turn("user", f"{tag} q{i % 5}"),), "a", "b", tag, "f", i) for i in range(n)
        ]
        out.append(Pair(f"{tag}/x", (Turn("user", "u"), Turn("assistant", "a")), "a", "b", tag, "f", 99))
        return out

    test_sets = {"helpful": pairs("helpful", 20), "harmless": pairs("harmless", 20)}
    got = select_prompts(test_sets, ["helpful", "harmless"], 7, seed=0)
    assert [p["objective"] for p in got].count("helpful") == 4 and len(got) == 7
    contexts = [p["context"] for p in got]
    assert len(set(contexts)) == 7 and all(c[-1].role == "user" for c in contexts)
    assert got == select_prompts(test_sets, ["helpful", "harmless"], 7, seed=0)
    assert len(select_prompts(test_sets, ["helpful"], 50, seed=0)) == 5  # only 5 distinct contexts exist


def _group(first_user_turn: str) -> str:
    """A prompt group by its definition (data.types.Pair.group_key): sha1 of the stripped first user turn."""
    import hashlib

    return hashlib.sha1(first_user_turn.strip().encode("utf-8")).hexdigest()


def test_bon_and_rl_prompts_come_from_groups_no_rm_or_pm_saw(study):
    import gzip

    from rmtension.config import load_config
    from rmtension.data import build_dataset

    out, path = study
    cfg = load_config(path)
    bundle = build_dataset(cfg.data, cfg.data.path)
    seen = {
        _group(next(t.content for t in p.context if t.role == "user"))
        for by in bundle.splits.values()
        for split in ("train", "val")
        for p in by.get(split, [])
    }
    ids = {p.pair_id: p for by in bundle.splits.values() for pairs in by.values() for p in pairs}
    for o in ("helpful", "harmless", "mixed"):  # the PM halves train on (and validate on) the same groups
        halves = json.loads((out / "pm" / o / "halves.json").read_text())["halves"]
        for h in halves.values():
            assert {
                _group(next(t.content for t in ids[i].context if t.role == "user")) for i in h["pair_ids"]
            } <= seen
    prompts = json.loads((out / "bon" / "prompts.json").read_text())["prompts"]
    rl = json.loads((out / "rl" / "prompts.json").read_text())
    chosen = prompts + rl["train"] + rl["eval"]
    groups = [_group(next(t["content"] for t in p["context"] if t["role"] == "user")) for p in chosen]
    assert groups and not set(groups) & seen
    for batch in (prompts, rl["train"], rl["eval"]):  # one prompt per group within each set
        g = [_group(next(t["content"] for t in p["context"] if t["role"] == "user")) for p in batch]
        assert len(g) == len(set(g))
    # the danger was real: most of harmless-base's test prompts also open official training pairs
    with gzip.open(cfg.data.path + "/harmless-base/train.jsonl.gz", "rt", encoding="utf-8") as f:
        train_file = {
            _group(json.loads(line)["chosen"].split("\n\nHuman: ")[1].split("\n\nAssistant:")[0])
            for line in f
        }
    test_groups = {p.group_key for p in bundle.test_sets["harmless"]}
    assert len(train_file & test_groups) >= 60


def test_select_prompts_skips_excluded_groups_and_takes_one_per_group():
    from rmtension.data.types import Pair, Turn
    from rmtension.policy.prompts import rl_prompts, select_prompts, trained_groups

    def pair(pid, first, second=None):
        ctx = (Turn("user", first),) + ((Turn("assistant", "ok"), Turn("user", second)) if second else ())
        return Pair(pid, ctx, "a", "b", "s", "f", 1)

    test = [pair(f"t{i}", f"q{i % 6}", f"follow {i}") for i in range(30)]  # 6 groups, 5 contexts each
    splits = {"helpful": {"train": [pair("x0", "q0"), pair("x1", "q1")], "val": [pair("x2", "q2 ")]}}
    exclude = trained_groups(splits)
    assert exclude == {test[0].group_key, test[1].group_key, test[2].group_key}  # "q2 " strips to "q2"
    got = select_prompts({"helpful": test}, ["helpful"], 10, seed=0, exclude=exclude)
    assert sorted(p["context"][0].content for p in got) == ["q3", "q4", "q5"]
    train, evaluation = rl_prompts({"helpful": test}, ["helpful"], 10, 2, seed=0, exclude=exclude)
    assert len(evaluation) == 2 and len(train) == 1
    assert not {p["group"] for p in train} & {p["group"] for p in evaluation}
    assert not {p["group"] for p in train + evaluation} & exclude


def test_rl_refuses_sampling_that_is_not_the_policy_itself(study, capsys):
    _, path = study
    for bad in ("policy.temperature=0.7", "policy.top_k=50", "policy.top_p=0.9"):
        assert main(["study", "--config", str(path), bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "temperature=1" in err and err.startswith("error: rl:"), err
    # best-of-n alone may sample at another temperature
    from rmtension.config import load_config

    assert load_config(path, ["rl=null", "policy.temperature=0.7"]).policy.temperature == 0.7
    from rmtension.errors import ConfigError

    with pytest.raises(ConfigError, match="deprecated alias"):  # rl.seed contradicting the config's rl.seeds
        load_config(path, ["rl.seed=3"])


def compared(best: str, delta: float) -> dict:
    others = {"sqrt_kl": 0.0, "kl": 0.0, "log_n": 0.0}
    others = {k: {"aic": (0.0 if k == best else delta), "slope": 0.5, "r2": 0.9} for k in others}
    return {"forms": others, "best": best, "delta_aic": delta}


@pytest.mark.parametrize(
    "best, delta, ci, verdict",
    [
        ("sqrt_kl", 3.0, [0.2, 0.6], "supported"),
        ("sqrt_kl", 1.0, [0.2, 0.6], "inconclusive"),  # the forms fit about as well
        ("kl", 3.0, [0.2, 0.6], "not supported"),  # another form fits clearly better
        ("kl", 1.0, [0.2, 0.6], "inconclusive"),
        ("sqrt_kl", 3.0, [-0.05, 0.05], "not supported"),  # flat: the slope is inside ±0.1
        ("sqrt_kl", 3.0, [-0.6, -0.2], "not supported"),  # falls
        ("sqrt_kl", 3.0, [-0.2, 0.6], "inconclusive"),
        ("sqrt_kl", 3.0, [float("nan")] * 2, "inconclusive"),
    ],
)
def test_sqrt_kl_rule(best, delta, ci, verdict):
    from rmtension.stats.fits import form_verdict

    assert form_verdict(compared(best, delta), ci, 0.1) == verdict


def _gap(excess_ci, n=8):
    lo, hi = excess_ci
    mid = (lo + hi) / 2
    return {
        "n": [1, n],
        "gap": [0, mid + 0.1],
        "rtm": [0, 0.1],
        "excess": [0, mid],
        "rho": 0.8,
        "gap_ci_low": [0, lo + 0.1],
        "gap_ci_high": [0, hi + 0.1],
        "excess_ci_low": [0, lo],
        "excess_ci_high": [0, hi],
        "selected": [0, 1],
        "judged": [0, 1],
        "level": 0.95,
    }


def write_optimisation(run, slope_ci, excess_ci, best="sqrt_kl", rl_excess=None):
    entry = {
        "heldout_curve": "reward_test_pm",
        "curves": {"reward_test_pm": compared(best, 4.0)},
        "slope_ci": {"reward_test_pm": slope_ci},
        "gao_test_pm": {"alpha": 1.0, "beta": 0.25, "peak_d": 2.0, "peak_n": 30.0},
        "gap": _gap(excess_ci),
        "gap_swapped": _gap([-0.1, 0.1]),
        "gap_both_roles": _gap(excess_ci),  # what the verdict reads: the excess averaged over both roles
    }
    (run / "bon_fit.json").write_text(json.dumps({"objectives": {"helpful": entry, "harmless": entry}}))
    if rl_excess is not None:
        lo, hi = rl_excess
        rl = {
            "helpful": {
                "trend": 0.4,
                "trend_ci95": slope_ci,
                "trend_judge": "reward_train_pm",
                "curves": {"reward_train_pm": compared(best, 4.0)},
                "gap": {
                    "gap": 0.3,
                    "rtm": 0.1,
                    "rho": 0.7,
                    "excess": (lo + hi) / 2,
                    "excess_ci_low": lo,
                    "excess_ci_high": hi,
                },
            }
        }
        (run / "rl.json").write_text(json.dumps(rl))


@pytest.mark.parametrize(
    "slope_ci, excess_ci, rl_excess, sqrt_verdict, gap_verdict",
    [
        ([0.3, 0.7], [0.15, 0.4], None, "supported", "supported"),
        ([0.3, 0.7], [0.15, 0.4], [-0.05, 0.05], "supported", "not supported"),  # RL's excess is negligible
        ([0.3, 0.7], [0.15, 0.4], [-0.1, 0.5], "supported", "inconclusive"),
        ([-0.02, 0.05], [-0.3, -0.1], None, "not supported", "not supported"),
    ],
)
def test_optimisation_findings_follow_their_rules(
    tmp_path, slope_ci, excess_ci, rl_excess, sqrt_verdict, gap_verdict
):
    from rmtension.rl.claims import sqrt_kl, train_test_gap

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\nbon: {n_samples: 8}\n")
    write_optimisation(run, slope_ci, excess_ci, rl_excess=rl_excess)
    s, g = sqrt_kl(run), train_test_gap(run)
    assert (s.verdict, g.verdict) == (sqrt_verdict, gap_verdict)
    assert s.min_effect == 0.1 and g.min_effect == 0.1  # the MIN_EFFECT defaults
    assert s.ci95["best-of-n helpful"] == slope_ci and g.ci95["best-of-8 helpful"] == excess_ci
    assert g.effect["best-of-8 helpful"] == pytest.approx(sum(excess_ci) / 2)
    assert s.test and s.null and g.test and g.null
    assert "peak at d* = 2.00" in s.evidence and "pm_test selecting" in g.evidence
    assert ("RL helpful" in g.ci95) == (rl_excess is not None)
    d = g.as_dict()
    assert d["source_files"] == (["bon_fit.json", "rl.json"] if rl_excess else ["bon_fit.json"])
    # a run written before the held-out analysis is not read with the new rules
    (run / "bon_fit.json").write_text(json.dumps({"objectives": {"helpful": {"sqrt_kl": {}, "gap": {}}}}))
    (run / "rl.json").unlink(missing_ok=True)
    assert sqrt_kl(run).verdict == "not run" and "predate" in sqrt_kl(run).evidence


@pytest.mark.parametrize(
    "cross, verdict",
    [
        ([[0.35, 0.45], [0.45, 0.55]], "supported"),  # one RM clearly below chance
        ([[0.47, 0.53], [0.46, 0.54]], "not supported"),  # both equivalent to chance (±0.05)
        ([[0.52, 0.60], [0.51, 0.58]], "not supported"),  # both above chance
        ([[0.40, 0.60], [0.47, 0.53]], "inconclusive"),
    ],
)
def test_tradeoff_uses_the_equivalence_rule_and_the_held_out_frontier(tmp_path, cross, verdict):
    from rmtension.bon.claims import tradeoff

    run = tmp_path / "run"
    run.mkdir()
    cell = lambda ci: {"mean": sum(ci) / 2, "ci95": ci}  # noqa: E731
    acc = {"helpful": {"harmless": cell(cross[0])}, "harmless": {"helpful": cell(cross[1])}}
    (run / "tension.json").write_text(json.dumps({"accuracy": acc}))
    f = tradeoff(run)
    assert f.verdict == verdict and f.min_effect == 0.05
    assert f.ci95["helpful RM on harmless"] == pytest.approx([0.5 - cross[0][1], 0.5 - cross[0][0]])
    assert "frontier" not in f.source
    pd.DataFrame(
        [
            {
                "kind": "weighted",
                "selector": "w=0.00",
                "w": 0.0,
                "n": 8,
                "helpful": -0.2,
                "harmless": 0.9,
                "judged_by": "pm_test",
            },
            {
                "kind": "weighted",
                "selector": "w=1.00",
                "w": 1.0,
                "n": 8,
                "helpful": 0.8,
                "harmless": -0.3,
                "judged_by": "pm_test",
            },
        ]
    ).to_csv(run / "frontier.csv", index=False)
    f = tradeoff(run)
    assert "read by the held-out PMs" in f.evidence and "helpful z +0.80 and harmless z -0.30" in f.evidence
    assert f.source_files == ["tension.json", "frontier.csv"]
