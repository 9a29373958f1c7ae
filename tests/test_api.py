"""`rmtension.api` on judges the study did not train: a tiny Llama-shaped RM with a chat template in its
tokenizer, the tiny study's own RM, and the packaged MiniLM. Rewards are checked against the study's eval
CSV and against a plain HF forward computed here, on the text each prompt format writes."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rmtension.api import evaluate, load_judge, score_neurons
from rmtension.config import load_config
from rmtension.data.types import Pair, Turn, render_transcript
from rmtension.errors import RmtensionError
from tiny import save_tiny

REPO = Path(__file__).resolve().parents[1]
CHAT_TEMPLATE = "{% for m in messages %}<cls>{{ m['role'] }}\n{{ m['content'] }}<eos>{% endfor %}"


def chat_rm(folder: Path, seed: int = 0) -> Path:
    """A tiny Llama sequence classifier saved as an HF folder whose tokenizer carries a chat template."""
    save_tiny(folder, "llama", seed=seed)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    return folder


def some_pairs(n: int = 7) -> list[Pair]:
    words = ["apple", "tree", "house", "river", "sky", "stone", "cloud"]
    out = []
    for i in range(n):
        ctx = (Turn("user", f"tell me about the {words[i % 7]} {i}"),)
        if i % 3 == 0:
            ctx = (Turn("system", "be brief"), *ctx)
        out.append(
            Pair(
                f"p{i}",
                ctx,
                f"the {words[(i + 1) % 7]} is " + "big " * (i % 4 + 1),
                "no",
                "toy",
                "toy",
                i + 1,
            )
        )
    return out


def direct_rewards(folder: Path, texts: list[str], special: bool, max_length: int = 512) -> np.ndarray:
    """One unpadded HF forward per text, no rmtension code in between."""
    tok = AutoTokenizer.from_pretrained(folder)
    tok.truncation_side = "left"
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            ids = tok(
                t, add_special_tokens=special, truncation=True, max_length=max_length, return_tensors="pt"
            )
            out.append(float(model(**ids).logits[0, 0]))
    return np.array(out)


def test_chat_template_rm_rewards_equal_a_direct_hf_forward_on_apply_chat_template(tmp_path):
    folder = chat_rm(tmp_path / "chat-rm")
    judge = load_judge(str(folder))  # auto: the tokenizer has a chat template
    assert judge.template == "chat"
    pairs = some_pairs()
    res = evaluate(judge, pairs, bootstrap=50)
    tok = AutoTokenizer.from_pretrained(folder)
    msgs = lambda p, reply: [{"role": t.role, "content": t.content} for t in p.context] + [  # noqa: E731
        {"role": "assistant", "content": reply}
    ]
    chosen = [tok.apply_chat_template(msgs(p, p.chosen), tokenize=False) for p in pairs]
    rejected = [tok.apply_chat_template(msgs(p, p.rejected), tokenize=False) for p in pairs]
    assert chosen[0].startswith("<cls>system\nbe brief<eos><cls>user\n")
    np.testing.assert_allclose(res.rewards.chosen, direct_rewards(folder, chosen, False), atol=2e-5, rtol=0)
    np.testing.assert_allclose(
        res.rewards.rejected, direct_rewards(folder, rejected, False), atol=2e-5, rtol=0
    )
    hh = load_judge(str(folder), template="hh")  # the same model on HH turns
    got = evaluate(hh, pairs, bootstrap=50).rewards.chosen
    want = direct_rewards(folder, [render_transcript(p.context, p.chosen) for p in pairs], True)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    assert not np.allclose(got, res.rewards.chosen)  # the two formats are different texts


def test_sign_minus_one_gives_one_minus_accuracy_and_records_it(tmp_path):
    folder = chat_rm(tmp_path / "rm", seed=3)
    pairs = some_pairs(12) + [
        Pair("same", (Turn("user", "hi"),), "ok", "ok", "toy", "toy", 99)
    ]  # a reward tie
    plus = evaluate(load_judge(str(folder)), pairs, bootstrap=50)
    minus = evaluate(load_judge(str(folder), sign=-1), pairs, bootstrap=50)
    assert minus.judge["sign"] == -1 and plus.judge["sign"] == 1
    np.testing.assert_array_equal(minus.rewards.chosen, -plus.rewards.chosen)
    tie = minus.rewards.chosen[-1] == minus.rewards.rejected[-1]
    assert tie  # the tie counts 0.5 under both signs
    assert minus.accuracy == pytest.approx(1 - plus.accuracy, abs=1e-12)
    assert 0 < plus.accuracy < 1


def test_templates_that_do_not_fit_and_configs_that_are_no_classifier_fail_in_one_line(tmp_path):
    plain = save_tiny(tmp_path / "plain", "llama")  # no chat template
    assert load_judge(str(plain)).template == "hh"
    with pytest.raises(
        RmtensionError, match="template chat does not fit: its tokenizer has no chat template"
    ):
        load_judge(str(plain), template="chat")
    broken = chat_rm(tmp_path / "broken")
    tok = AutoTokenizer.from_pretrained(broken)
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    tok.save_pretrained(broken)
    with pytest.raises(RmtensionError, match="neither template fits.*roles must alternate") as e:
        load_judge(str(broken))
    assert "\n" not in str(e.value)
    from transformers import ViTConfig

    vit = tmp_path / "vit"
    ViTConfig().save_pretrained(vit)
    with pytest.raises(RmtensionError, match="'vit' model, which has no sequence-classification head") as e:
        load_judge(str(vit))
    with pytest.raises(RmtensionError, match="needs the base model|compares with the base model"):
        score_neurons(load_judge(str(plain)), some_pairs(2), scorers=["rms_change"])


def test_study_rm_rewards_equal_the_study_eval_csv_and_a_direct_forward(tiny_study_run):
    base, cfg_path, run = tiny_study_run
    cfg = load_config(str(cfg_path), [])
    folder = run / "rm" / "helpful" / "seed0"
    judge = load_judge(str(folder), template="hh", max_length=cfg.model.max_length)
    res = evaluate(
        judge, "hh:helpful", data=cfg.data, bootstrap=100
    )  # the carved split of the study's config
    study = pd.read_csv(run / "eval" / "helpful" / "seed0" / "helpful.csv")
    assert list(res.rewards.pair_ids) == list(study.pair_id)
    np.testing.assert_allclose(res.rewards.chosen, study.r_chosen, atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.rewards.rejected, study.r_rejected, atol=1e-5, rtol=0)
    from rmtension.api import load_test_set

    pairs = load_test_set("hh:helpful", cfg.data).pairs
    texts = [render_transcript(p.context, p.chosen) for p in pairs]
    np.testing.assert_allclose(
        res.rewards.chosen, direct_rewards(folder, texts, True, cfg.model.max_length), atol=2e-5, rtol=0
    )
    tension = json.loads((run / "tension.json").read_text())
    assert res.accuracy == pytest.approx(tension["accuracy"]["helpful"]["helpful"]["per_seed"][0], abs=1e-12)
    every = load_test_set("hh:helpful:all", cfg.data).pairs  # every pair of the helpful subsets' files
    rows = {
        (r["chosen"], r["rejected"])
        for sub in ("helpful-base", "helpful-online")
        for r in map(json.loads, gzip.open(base / "hh" / sub / "test.jsonl.gz", "rt"))
    }  # the files' distinct rows (the loader drops duplicates)
    assert len(every) == len(rows) and {p.pair_id for p in pairs} < {p.pair_id for p in every}
    scores = score_neurons(judge, pairs[:6], scorers=["mean_act", "attribution"])
    assert scores.scores["mean_act"].shape == (2, 64) and scores.n_pairs == 6


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Using rmtension as a library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_library_example_runs_as_written_in_a_clean_interpreter(tiny_study_run, tmp_path):
    """The README's code block, unchanged, in a fresh interpreter, in a folder laid out as it assumes
    (its `suite:suites/...` is the suite shipped inside the package: the folder has no suites/)."""
    _, _, run = tiny_study_run
    (tmp_path / "runs" / "smoke" / "rm").mkdir(parents=True)
    (tmp_path / "runs" / "smoke" / "rm" / "harmless").symlink_to(run / "rm" / "harmless")
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"accuracy 0\.\d+ \[", done.stdout), done.stdout
    assert "helpful_refusal > verbose_bare_refusal" in done.stdout


@pytest.mark.real
def test_packaged_minilm_rewards_equal_a_direct_hf_forward():
    from rmtension.model.backbones import resolve_backbone

    judge = load_judge("minilm", template="hh")
    assert judge.fresh_head is True  # a backbone: its score head is new, and the results say so
    folder = Path(resolve_backbone("minilm"))
    torch.manual_seed(0)
    pairs = some_pairs(5)
    res = evaluate(judge, pairs, bootstrap=20)
    direct = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1).eval()
    direct.load_state_dict(judge.model.state_dict())  # the same random head in both
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        want = [
            float(direct(**tok(render_transcript(p.context, p.chosen), return_tensors="pt")).logits[0, 0])
            for p in pairs
        ]
    np.testing.assert_allclose(res.rewards.chosen, want, atol=2e-5, rtol=0)


@pytest.mark.real
def test_packaged_minilm_rm_of_the_smoke_study_equals_its_eval_csv(smoke_run):
    cfg = yaml.safe_load((smoke_run / "config.yaml").read_text())
    from rmtension.config import StudyConfig
    from rmtension.model.precision import use_bf16

    cfg = StudyConfig.model_validate(cfg)
    judge = load_judge(
        str(smoke_run / "rm" / "harmless" / "seed0"), template="hh", max_length=cfg.model.max_length
    )
    res = evaluate(judge, "hh:harmless", data=cfg.data, bootstrap=100)
    study = pd.read_csv(smoke_run / "eval" / "harmless" / "seed0" / "harmless.csv")
    assert list(res.rewards.pair_ids) == list(study.pair_id)
    # The API scores in fp32. Where the CPU computes bf16 natively the study ran its trunk cache and forwards
    # in bf16 (`train.bf16`), whose rewards agree to bf16 rounding only (measured: up to 7e-4 on MiniLM).
    atol = 5e-3 if use_bf16(cfg.train.bf16, "cpu") else 1e-4
    np.testing.assert_allclose(res.rewards.chosen, study.r_chosen, atol=atol, rtol=0)
    np.testing.assert_allclose(res.rewards.rejected, study.r_rejected, atol=atol, rtol=0)


def test_ablate_zeroes_the_set_as_a_direct_hook_does_and_draws_matched_controls(tmp_path):
    from rmtension.api import ablate

    folder = chat_rm(tmp_path / "rm", seed=5)
    judge = load_judge(str(folder), sign=-1)
    pairs = some_pairs(6)
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[1] = (
        True  # every MLP neuron of the top block: its MLP adds exactly 0 (Llama's down_proj has no bias)
    )
    mask[0, :5] = True
    res = ablate(judge, pairs, mask, controls=3, seed=0)
    plain = evaluate(judge, pairs, bootstrap=20).rewards
    np.testing.assert_allclose(res.clean, plain.margins, atol=2e-5, rtol=0)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    keep = torch.ones(64)
    keep[:5] = 0
    hooks = [
        model.model.layers[1].mlp.register_forward_hook(lambda m, i, o: torch.zeros_like(o)),
        model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda m, i: (i[0] * keep,)),
    ]
    msgs = lambda p, r: [{"role": t.role, "content": t.content} for t in p.context] + [  # noqa: E731
        {"role": "assistant", "content": r}
    ]
    with torch.no_grad():
        r = lambda p, reply: float(  # noqa: E731
            model(
                **tok(
                    tok.apply_chat_template(msgs(p, reply), tokenize=False),
                    add_special_tokens=False,
                    return_tensors="pt",
                )
            ).logits[0, 0]
        )
        want = [-(r(p, p.chosen) - r(p, p.rejected)) for p in pairs]  # sign -1
    for h in hooks:
        h.remove()
    np.testing.assert_allclose(res.ablated, want, atol=2e-5, rtol=0)
    assert len(res.controls) == 3 and res.summary()["n_draws"] == 3
    assert not np.allclose(res.controls[0], res.ablated)  # a random draw of 5 + 64 neurons per layer differs
