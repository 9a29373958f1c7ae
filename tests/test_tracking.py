"""Training metrics: metrics.jsonl always, TensorBoard through accelerate when asked, exact after resume."""

from __future__ import annotations

import importlib.util
import json

import pytest

from rmtension.config import load_config
from rmtension.errors import ConfigError
from rmtension.trainer.train import train_reward_model
from test_train import cfg, stop_after_first_step, synthetic
from tiny import tiny_reward_model, tiny_tokenizer


@pytest.fixture()
def data():
    tok = tiny_tokenizer("llama")
    return tok, synthetic(tok, 40, "train"), synthetic(tok, 12, "val", seed=1)


def rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_metrics_jsonl_has_one_line_per_step_with_loss_lr_and_val_accuracy(tmp_path, data):
    tok, tr, va = data
    res = train_reward_model(
        tiny_reward_model("llama"),
        tok,
        tr,
        va,
        cfg(eval_every=3, warmup_ratio=0.5),
        seed=0,
        out_dir=tmp_path / "rm",
        progress=False,
    )
    got = rows(tmp_path / "rm")
    assert [r["step"] for r in got] == [s for s, _ in res.metrics["loss"]] == list(range(1, 11))
    assert [r["loss"] for r in got] == [v for _, v in res.metrics["loss"]]
    assert {r["step"]: r["val_accuracy"] for r in got if "val_accuracy" in r} == dict(
        res.metrics["val_accuracy"]
    )
    assert [r["step"] for r in got if "val_accuracy" in r] == [3, 6, 9, 10]
    # lr of each step: warmup over 5 steps to 3e-3, then linear decay
    assert got[0]["lr"] == pytest.approx(3e-3 / 5) and got[4]["lr"] == pytest.approx(3e-3)
    assert got[-1]["lr"] < got[5]["lr"]
    assert not (tmp_path / "rm" / "tracking").exists()  # no tracker asked for, no tracker files


def test_tensorboard_gets_the_same_scalars(tmp_path, data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tok, tr, va = data
    train_reward_model(
        tiny_reward_model("llama"),
        tok,
        tr,
        va,
        cfg(epochs=1, trackers=["tensorboard"]),
        seed=0,
        out_dir=tmp_path / "rm",
        progress=False,
    )
    events = list((tmp_path / "rm" / "tracking").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert {"loss", "lr", "val_accuracy"} <= set(acc.Tags()["scalars"])
    logged = {e.step: e.value for e in acc.Scalars("loss")}
    assert logged == pytest.approx({r["step"]: r["loss"] for r in rows(tmp_path / "rm")}, abs=1e-6)


def test_resumed_run_writes_the_same_metrics_jsonl(tmp_path, data):
    tok, tr, va = data
    train_reward_model(
        tiny_reward_model("llama"), tok, tr, va, cfg(), seed=3, out_dir=tmp_path / "full", progress=False
    )
    stop_after_first_step(tok, tr, va, tmp_path / "resumed")
    with open(
        tmp_path / "resumed" / "metrics.jsonl", "a"
    ) as f:  # lines past the checkpoint, one cut off by a kill
        f.write(json.dumps({"step": 2, "loss": 9.0, "lr": 0.0}) + "\n" + '{"step": 3, "lo')
    train_reward_model(
        tiny_reward_model("llama"), tok, tr, va, cfg(), seed=3, out_dir=tmp_path / "resumed", progress=False
    )
    assert rows(tmp_path / "resumed") == rows(tmp_path / "full")


def test_trackers_are_validated_by_name_and_installation():
    assert load_config(None, ["train.trackers=[tensorboard]"]).train.trackers == ["tensorboard"]
    with pytest.raises(ConfigError, match="train.trackers"):
        load_config(None, ["train.trackers=[mlflow]"])
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match=r"train\.trackers.*wandb.*not installed"):
            load_config(None, ["train.trackers=[wandb]"])
