"""PM halves, best-of-n and RL as study stages, end to end on tiny models and synthetic HH files."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from rmtension.cli import main
from rmtension.optimise.pm_halves import split_halves
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
        },
        report={"enabled": False},
    )
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
    assert {"sqrt_kl", "gao_test_pm", "gap"} <= set(fit["objectives"]["helpful"])
    assert "upper bound" in fit["kl"]
    frontier = pd.read_csv(out / "frontier.csv")
    w = frontier[frontier["kind"] == "weighted"]
    assert np.all(np.diff(w["helpful"]) >= -1e-9) and np.all(np.diff(w["harmless"]) <= 1e-9)
    assert {"rm_helpful", "rm_harmless", "rm_mixed"} <= set(frontier["selector"])
    examples = json.loads((out / "bon" / "examples.json").read_text())
    assert len(examples["prompts"]) == 2 and len(examples["prompts"][0]["n1"]) == 2
    rl = pd.read_csv(out / "rl.csv")
    assert list(rl["objective"]) == ["helpful"] * 2 + ["mixed"] * 2
    for col in ("step", "kl", "reward_train_pm", "reward_test_pm", "reward_other_objective"):
        assert col in rl.columns
    assert (rl[rl["step"] == 0]["kl"] == 0).all()
    assert rl[rl["objective"] == "helpful"]["reward_other_objective"].notna().all()
    assert json.loads((out / "rl.json").read_text())["helpful"]["steps"] == 2


def test_a_second_run_skips_every_optimisation_stage(study, capsys):
    out, path = study
    before = {
        p: p.stat().st_mtime_ns
        for p in [out / "bon" / "samples.parquet", out / "rl.csv", out / "pm" / "helpful" / "halves.json"]
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

    from rmtension.optimise.judges import JudgePanel
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
    from rmtension.report.document import write_report

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
    assert md.count("the sqrt(KL) relation was") >= 3 + 2  # best-of-n per objective, RL per objective
    assert md.count("the train/test gap was") >= 3 + 2
    assert "R² = " in md and "upper bound" in md
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
    assert "training pm_" not in log and "sampling 4 responses" in log and "R²" in log
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
    assert list(pd.read_csv(out / "rl.csv")["objective"]) == ["harmless"]
    assert "sampling" not in capsys.readouterr().out  # `rl` reuses the best-of-n samples of the same config
    assert main(["policy", "sample", "--config", str(path), "--prompt", " "]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --prompt") and len(err.strip().splitlines()) == 1


def test_select_prompts_takes_equal_shares_of_distinct_user_ending_contexts():
    from rmtension.optimise.bon_stage import select_prompts
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
