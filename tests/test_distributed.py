"""Two CPU processes (`accelerate launch`, gloo) give the results of one process.

tests/distkit.py trains tiny reward models (full fine-tuning with gradient accumulation, and the
top block over a cached trunk for Llama and BERT, all with a ragged last batch), evaluates them,
resumes an interrupted run with dropout, scores every neuron and runs an ablation. It runs as a
plain process and under `accelerate launch` with configs/accelerate/ddp_cpu.yaml (DDP),
fsdp_cpu.yaml (FSDP 2: weights, gradients and optimiser state sharded) and deepspeed_zero2_cpu.yaml
(DeepSpeed ZeRO-2: optimiser state and gradients sharded, its engine stepping at the end of each
accumulation and writing the optimiser state into the checkpoints) and deepspeed_zero3_cpu.yaml
(ZeRO-3: the weights partitioned too); the
loss curves and validation accuracies must agree within 1e-5, the saved weights within 1e-5, the
neuron scores within 1e-6, and the per-pair results must come back in the same order. Then a
whole tiny study runs as a plain process and under each launch config.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from transformers import AutoModelForSequenceClassification

from tiny import save_tiny, tiny_config, tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("distkit.py")
# Two processes on CPU, one thread each, no GPU, no network.
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "ACCELERATE_USE_CPU": "true",
    "CUDA_VISIBLE_DEVICES": "",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}
if Path("/sys/class/net/lo").exists():  # gloo over loopback, also where the host name does not resolve
    ENV.setdefault("GLOO_SOCKET_IFNAME", "lo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], out: Path) -> dict:
    proc = subprocess.run(cmd, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def _write_models(work: Path) -> None:
    save_tiny(work / "model", "llama", seed=0)
    save_tiny(work / "base", "llama", seed=1)
    config = tiny_config("llama")
    config.attention_dropout = 0.2
    torch.manual_seed(0)
    dropout = AutoModelForSequenceClassification.from_config(config)
    dropout.save_pretrained(work / "dropout")
    tiny_tokenizer("llama").save_pretrained(work / "dropout")
    bert = tiny_config("bert")
    bert.hidden_dropout_prob = bert.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(bert).save_pretrained(work / "bert")
    tiny_tokenizer("bert").save_pretrained(work / "bert")
    save_tiny(work / "backbone", "llama", causal=True)  # no score head: loading it as an RM initialises one


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    work = tmp_path_factory.mktemp("dist_single")
    _write_models(work)
    return run(
        [sys.executable, str(SCRIPT), str(work), str(work / "result.json")], work / "result.json"
    ), work


LAUNCH_CONFIGS = ["ddp_cpu", "fsdp_cpu", "deepspeed_zero2_cpu", "deepspeed_zero3_cpu"]


@pytest.fixture(scope="module", params=LAUNCH_CONFIGS)
def runs(request, single, tmp_path_factory):
    """(single-process result, the result launched with configs/accelerate/<param>.yaml, its work dir, its config)."""
    launched = tmp_path_factory.mktemp(f"dist_{request.param}")
    _write_models(launched)
    # CPU-RAM-efficient loading asked for, as a config may: rmtension must turn it off
    extra = ["--fsdp_cpu_ram_efficient_loading", "true"] if request.param == "fsdp_cpu" else []
    two = run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(REPO / f"configs/accelerate/{request.param}.yaml"),
            "--main_process_port",
            str(free_port()),
            *extra,
            str(SCRIPT),
            str(launched),
            str(launched / "result.json"),
        ],
        launched / "result.json",
    )
    return single[0], two, launched, request.param


def test_conflict_and_pcgrad_under_ddp_match_one_process(runs):
    one, two, _, config = runs
    if config != "ddp_cpu":  # FSDP and DeepSpeed: a ConfigError before any training step
        assert "not FSDP / DeepSpeed" in two["conflict"]["refused"]
        return
    for name in ("conflict", "pcgrad"):
        a, b = one["conflict"][name], two["conflict"][name]
        assert a["rows"]["block"] == b["rows"]["block"] and a["rows"]["step"] == b["rows"]["step"]
        for col in ("cosine", "norm_helpful", "norm_harmless", "opposite_sign_share"):
            np.testing.assert_allclose(b["rows"][col], a["rows"][col], atol=1e-6, rtol=1e-5)
        np.testing.assert_allclose(np.array(b["loss"])[:, 1], np.array(a["loss"])[:, 1], atol=1e-6)
        np.testing.assert_allclose(b["eval"], a["eval"], atol=1e-5)
    m = one["conflict"]["conflict"]["metrics"]  # 41 pairs in batches of 8: 6 steps, each measured or skipped
    assert m["measured_steps"] + m["skipped_steps"] == 6 == -(-41 // 8)
    assert m["measured_steps"] == len(set(one["conflict"]["conflict"]["rows"]["step"])) >= 4


def test_the_launch_ran_two_cpu_processes(runs):
    one, two, _, config = runs
    assert one["world_size"] == 1
    assert two["world_size"] == 2 and two["distributed_type"].endswith("MULTI_CPU")
    engine = {
        "ddp_cpu": "MULTI_CPU",
        "fsdp_cpu": "FSDP",
        "deepspeed_zero2_cpu": "DEEPSPEED",
        "deepspeed_zero3_cpu": "DEEPSPEED",
    }
    assert two["trained_under"].endswith(engine[config]) and one["trained_under"].endswith(".NO")
    # FSDP and ZeRO-3 shard the weights; DDP, ZeRO-2 and one process keep whole copies in each process
    sharded = config in ("fsdp_cpu", "deepspeed_zero3_cpu")
    assert [two[m]["sharded"] for m in ("full", "top1", "bert_top1")] == [sharded] * 3
    assert not any(one[m]["sharded"] for m in ("full", "top1", "bert_top1"))


def test_every_process_loads_a_backbone_whole_with_the_seeded_new_head(runs):
    """Under FSDP, transformers would leave the new head on the meta device outside the first process."""
    one, two, _, _ = runs
    assert len(two["fresh_head"]) == 2 and two["fresh_head"] == one["fresh_head"] * 2


def test_the_saved_models_match_the_single_process_ones(runs, single):
    """Under FSDP the shards are gathered into whole tensors before the main process writes.

    BERT's biases get near-zero gradients (its score-head bias none at all from the pairwise
    loss), which AdamW scales up to steps of about lr, so their rounding differences grow to ~1e-5;
    the score-head bias is left out and BERT's weights get a wider tolerance.
    """
    from rmtension.run.runio import load_tensors

    _, _, launched, _ = runs
    for name, atol in (("full", 1e-5), ("top1", 1e-5), ("bert_top1", 1e-4)):
        a = load_tensors(single[1] / "out" / name / "model.safetensors")
        b = load_tensors(launched / "out" / name / "model.safetensors")
        assert set(a) == set(b) and len(a) > 10
        for k in sorted(set(a) - {"classifier.bias"}):
            assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
            np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), atol=atol, rtol=0, err_msg=f"{name}: {k}")


@pytest.mark.parametrize("model", ["full", "top1", "bert_top1"])
def test_training_matches_the_single_process_run(runs, model):
    one, two, _, _ = runs
    a, b = one[model], two[model]
    assert [s for s, _ in a["loss"]] == [s for s, _ in b["loss"]] and len(a["loss"]) > 3
    np.testing.assert_allclose([v for _, v in b["loss"]], [v for _, v in a["loss"]], atol=1e-5, rtol=0)
    assert [s for s, _ in a["val_accuracy"]] == [s for s, _ in b["val_accuracy"]]
    np.testing.assert_allclose(
        [v for _, v in b["val_accuracy"]], [v for _, v in a["val_accuracy"]], atol=1e-5, rtol=0
    )
    assert a["best_step"] == b["best_step"]
    # evaluation gathers every pair's rewards back in the original order
    margin = lambda rewards: np.subtract(*rewards)  # noqa: E731
    np.testing.assert_allclose(margin(b["eval"]), margin(a["eval"]), atol=1e-5, rtol=0)
    if model != "bert_top1":
        # BERT's score head has a bias, which the pairwise loss gives no gradient: AdamW turns its
        # rounding-level gradient into steps of size lr, so BERT's rewards (not margins) drift by a constant.
        np.testing.assert_allclose(b["eval"], a["eval"], atol=1e-5, rtol=0)


def test_an_interrupted_run_with_dropout_resumes_exactly_on_each_process(runs):
    one, two, _, _ = runs
    assert one["resumes_exactly"] and two["resumes_exactly"]
    assert one["resumes_exactly_top1"] and two["resumes_exactly_top1"]  # top block over a trunk cache


def test_neuron_scores_match_the_single_process_pass(runs):
    one, two, _, _ = runs
    assert (one["n_pairs"], one["n_tokens"]) == (two["n_pairs"], two["n_tokens"]) == (15, one["n_tokens"])
    # the five scorers over tokens, plus activation and attribution where the score head reads
    scorers = {"mean_act", "fire_rate", "rms_change", "attribution", "contrast"}
    assert set(one["scores"]) == set(two["scores"]) == scorers | {"mean_act_read", "attribution_read"}
    for name in one["scores"]:
        np.testing.assert_allclose(two["scores"][name], one["scores"][name], atol=1e-6, rtol=0, err_msg=name)
    np.testing.assert_allclose(two["ablation"], one["ablation"], atol=1e-6, rtol=0)
    assert not np.allclose(one["ablation"][0], one["ablation"][1])  # the ablation did something


def test_only_the_main_process_wrote_the_outputs(runs):
    _, _, launched, _ = runs
    out = launched / "out" / "full"
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    assert not (out / "checkpoint").exists()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == list(range(1, len(steps) + 1))  # one line per step: no process wrote twice
    assert not list(out.glob(".*"))  # no temporary files left behind


# ---- the whole study under `accelerate launch -m rmtension` ------------------------------------


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """The same tiny study (Llama: no dropout, so all runs draw the same numbers) run plainly and under each launch config."""
    import yaml

    from studykit import tiny_config

    base = tmp_path_factory.mktemp("dist_study")
    cfg = tiny_config(
        base,
        "llama",
        helpful=(("helpful-base", 60),),
        harmless=(("harmless-base", 60),),
        max_train_pairs=20,
        max_length=48,
        train={"lr": 1e-3},
        neurons={
            "max_pairs": 10,
            "ps": [5, 20],
            "scorers": ["mean_act", "rms_change"],
            "rms": ["mixed", "helpful"],
            "batch_size": 4,
            "bf16": False,
        },
        ablation={
            "max_test_pairs": 10,
            "random_draws": 1,
            "bootstrap": 100,
            "bf16": False,
            "batch_size": 4,
        },
        report={"enabled": False},
    )
    (base / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    study = ["-m", "rmtension", "study", "--config", str(base / "cfg.yaml"), "--out"]
    runs = {}
    launch = lambda config: [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",  # noqa: E731
        str(REPO / f"configs/accelerate/{config}.yaml"),
        "--main_process_port",
        str(free_port()),
    ]
    for name, launcher in [("one", [sys.executable])] + [(c, launch(c)) for c in LAUNCH_CONFIGS]:
        proc = subprocess.run(
            launcher + study + [str(base / name)],
            env=ENV,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[name] = (base / name, proc.stdout)
    return runs


@pytest.mark.parametrize("config", LAUNCH_CONFIGS)
def test_a_launched_study_writes_the_same_results(studies, config):
    import pandas as pd

    from rmtension.run.runio import load_tensors

    (one, log1), (two, log2) = studies["one"], studies[config]
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(one) == files(two)
    for csv in sorted(one.glob("eval/*/*/*.csv")):
        a, b = pd.read_csv(csv), pd.read_csv(two / csv.relative_to(one))
        assert list(a.pair_id) == list(b.pair_id)
        np.testing.assert_allclose(
            b[["r_chosen", "r_rejected"]], a[["r_chosen", "r_rejected"]], atol=1e-5, rtol=0
        )
    for path in sorted(one.glob("neurons/*/scores.safetensors")):
        a, b = load_tensors(path), load_tensors(two / path.relative_to(one))
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), atol=1e-6, rtol=0, err_msg=k)
    a, b = pd.read_csv(one / "ablation.csv"), pd.read_csv(two / "ablation.csv")
    assert a.shape == b.shape and a.shape[0] > 10
    num = [c for c in a.select_dtypes("number").columns if c != "p_value"]
    np.testing.assert_allclose(b[num], a[num], atol=1e-5, rtol=0)
    # a paired t-test on the tiny model's near-zero effects turns 1e-7 of float reduction order in the
    # margins into ~1e-4 of p-value (measured up to 1.8e-4): compared at 1e-3
    np.testing.assert_allclose(b["p_value"], a["p_value"], atol=1e-3, rtol=0)
    # the main process alone speaks: the same log lines (timings aside) as the plain run, none repeated
    wall_time = r"\b(\d+\.\ds|\d+m\d\ds|\d+h\d\dm)\b"  # `rmtension.run.log.duration`: 12.3s, 4m05s, 1h02m
    lines = lambda log: sorted(
        re.sub(r"[0-9.]+", "#", re.sub(wall_time, "<time>", x.replace(f"/{config}", "/one")))
        for x in log.splitlines()  # noqa: E731
        if x.startswith("[rmtension]")
    )
    assert lines(log2) == lines(log1) and len(lines(log1)) > 10
