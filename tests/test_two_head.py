"""The two-head reward model: one backbone, a score head per objective (`rmtension.model.heads`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rmtension.model.backbones import load_reward_model
from rmtension.model.forward import PairForward
from rmtension.model.heads import HEADS, pick_heads, score_head, single_head
from rmtension.trainer.losses import bradley_terry_loss, split_rewards
from rmtension.trainer.train import own_heads, train_reward_model
from test_train import cfg, synthetic
from tiny import FAMILIES, save_tiny, tiny_tokenizer


def test_pick_heads_takes_each_rows_own_column():
    rewards = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])  # chosen 0, 1; rejected 0, 1
    heads = torch.tensor([1, 0])
    assert pick_heads(rewards, heads).tolist() == [2.0, 3.0, 6.0, 7.0]
    with pytest.raises(ValueError, match=r"\[2B, K\]"):
        pick_heads(rewards[:3], heads)


def test_own_heads_on_hand_made_scores():
    chosen = np.array([[0.1, 0.9], [0.5, -0.2], [1.0, 2.0]])
    rejected = np.array([[0.3, 0.0], [0.4, 0.1], [3.0, 1.0]])
    c, r = own_heads((chosen, rejected), np.array([1, 0, 1]))
    assert c.tolist() == [0.9, 0.5, 2.0] and r.tolist() == [0.0, 0.4, 1.0]
    one = (chosen[:, 0], rejected[:, 0])  # a one-head model's scores pass through unchanged
    assert own_heads(one, None) is one


def two_head_folder(tmp_path, family="llama"):
    folder = save_tiny(tmp_path / "backbone", family)
    tok = tiny_tokenizer(family)
    torch.manual_seed(0)
    return folder, tok, load_reward_model(str(folder), tok, heads=HEADS)


@pytest.mark.parametrize("family", FAMILIES)
def test_helpful_head_gets_no_gradient_from_harmless_pairs(tmp_path, family):
    _, tok, model = two_head_folder(tmp_path, family)
    head = getattr(model, score_head(model))
    assert head.out_features == 2
    enc = synthetic(tok, 4, "b")
    heads = torch.tensor([1, 1, 1, 1])  # a batch of harmless pairs only
    with PairForward(model, tok.pad_token_id, False) as fwd:
        r_c, r_r = split_rewards(pick_heads(fwd(enc, [0, 1, 2, 3]), heads))
    bradley_terry_loss(r_c, r_r).backward()
    grad = head.weight.grad
    assert grad[0].abs().max() == 0  # the helpful row: untouched
    assert grad[1].abs().max() > 0
    # a batch of both kinds: each row's gradient is that of its own pairs alone
    model.zero_grad()
    mixed = torch.tensor([0, 1, 0, 1])
    with PairForward(model, tok.pad_token_id, False) as fwd:
        bradley_terry_loss(*split_rewards(pick_heads(fwd(enc, [0, 1, 2, 3]), mixed))).backward()
        both = head.weight.grad.clone()
        model.zero_grad()
        # the helpful pairs alone, with the loss weighted as their share of the batch (the mean is over 4)
        (bradley_terry_loss(*split_rewards(pick_heads(fwd(enc, [0, 2]), mixed[[0, 2]]))) * 0.5).backward()
    torch.testing.assert_close(both[0], head.weight.grad[0])


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_saved_two_head_model_reloads_with_both_scores_and_names_its_heads(tmp_path, family):
    _, tok, model = two_head_folder(tmp_path, family)
    enc = synthetic(tok, 6, "s")
    with PairForward(model, tok.pad_token_id, False) as fwd:
        c, r = fwd.score(enc, batch_size=4)
    assert c.shape == (6, 2) and r.shape == (6, 2)
    model.save_pretrained(tmp_path / "two", safe_serialization=True)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "two").eval()
    assert plain.config.num_labels == 2 and plain.config.id2label == {0: "helpful", 1: "harmless"}
    with PairForward(plain, tok.pad_token_id, False) as fwd:
        c2, r2 = fwd.score(enc, batch_size=4)
    np.testing.assert_allclose(c2, c, atol=1e-6)
    np.testing.assert_allclose(r2, r, atol=1e-6)
    # each head as its own one-head RM, through the library's loader: that head's column
    for h, name in enumerate(HEADS):
        view = load_reward_model(str(tmp_path / "two"), tok, head=name).eval()
        assert view.config.num_labels == 1 and getattr(view, score_head(view)).out_features == 1
        with PairForward(view, tok.pad_token_id, False) as fwd:
            vc, vr = fwd.score(enc, batch_size=4)
        np.testing.assert_allclose(vc, c[:, h], atol=1e-6)
        np.testing.assert_allclose(vr, r[:, h], atol=1e-6)
    with pytest.raises(Exception, match="no head"):
        load_reward_model(str(tmp_path / "backbone"), tok, head="helpful")


def test_single_head_of_an_unknown_head_is_an_error(tmp_path):
    _, _, model = two_head_folder(tmp_path)
    with pytest.raises(ValueError, match="no head 'honest'"):
        single_head(model, "honest")


def test_two_head_training_learns_each_objective_on_its_own_head(tmp_path):
    """Helpful pairs prefer 'good', harmless pairs prefer 'bad': one scalar reward cannot fit both,
    two heads can."""
    _, tok, model = two_head_folder(tmp_path)
    good = synthetic(tok, 48, "h")
    flipped = synthetic(tok, 48, "x", seed=2)
    flipped = type(flipped)(flipped.pair_ids, flipped.rejected, flipped.chosen, 0, 0)  # 'bad' is chosen
    train = type(good)(
        good.pair_ids + flipped.pair_ids, good.chosen + flipped.chosen, good.rejected + flipped.rejected, 0, 0
    )
    heads = np.array([0] * 48 + [1] * 48)
    val_heads = heads[::4]
    val = type(train)(train.pair_ids[::4], train.chosen[::4], train.rejected[::4], 0, 0)
    res = train_reward_model(
        model,
        tok,
        train,
        val,
        cfg(epochs=3),
        seed=0,
        out_dir=tmp_path / "rm",
        progress=False,
        heads=(heads, val_heads),
    )
    assert res.best_val_accuracy == 1.0
    for name, code in zip(HEADS, (0, 1)):
        view = load_reward_model(str(tmp_path / "rm"), tok, head=name).eval()
        with PairForward(view, tok.pad_token_id, False) as fwd:
            c, r = fwd.score(train)
        own = heads == code
        assert (c[own] > r[own]).mean() > 0.9  # its own objective: right
        assert (c[~own] > r[~own]).mean() < 0.25  # the other objective's pairs: mostly the opposite reply


def test_a_study_with_two_head_evaluates_each_head_as_its_own_rm(tmp_path):
    import json

    import yaml

    from rmtension.cli import main
    from studykit import tiny_config

    cfg = tiny_config(
        tmp_path,
        "llama",
        combine={"methods": []},
        report={"enabled": False},
        neurons={
            "rms": ["two_head:harmless"],
            "max_pairs": 8,
            "ps": [5],
            "scorers": ["mean_act"],
            "bf16": False,
        },
        ablation={
            "rms": ["two_head:harmless"],
            "max_test_pairs": None,
            "random_draws": 1,
            "bootstrap": 100,
            "bf16": False,
        },
    )
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["study", "--config", str(tmp_path / "cfg.yaml"), "--out", str(out)]) == 0
    saved = json.loads((out / "rm" / "two_head" / "seed0" / "config.json").read_text())
    assert saved["id2label"] == {"0": "helpful", "1": "harmless"}
    acc = json.loads((out / "tension.json").read_text())["accuracy"]
    assert {"two_head:helpful", "two_head:harmless"} <= set(acc)
    # each view is its own head: the same pairs, different scores, and each head right on its own objective
    views = {h: pd.read_csv(out / "eval" / f"two_head_{h}" / "seed0" / f"{h}.csv") for h in HEADS}
    other = {
        h: pd.read_csv(out / "eval" / f"two_head_{h}" / "seed0" / f"{o}.csv")
        for h, o in zip(HEADS, HEADS[::-1])
    }
    assert list(views["helpful"]["pair_id"]) == list(other["harmless"]["pair_id"])
    assert not np.allclose(views["helpful"]["r_chosen"], other["harmless"]["r_chosen"])
    for h in HEADS:
        assert acc[f"two_head:{h}"][h]["mean"] >= 0.9, (h, acc[f"two_head:{h}"])
    # the neuron and ablation stages take a head like any RM: its unablated accuracy is the head's own
    sets = json.loads((out / "neurons" / "sets.json").read_text())["sets"]
    assert list(sets) == ["two_head_harmless-seed0"]
    ablated = pd.read_csv(out / "ablation.csv")
    assert set(ablated["rm"]) == {"two_head_harmless-seed0"}
    for t in HEADS:  # every test pair, unablated: the head's accuracy from the eval stage
        none = ablated[(ablated["neuron_set"] == "none") & (ablated["test_set"] == t)]
        assert none["accuracy"].tolist() == pytest.approx([acc["two_head:harmless"][t]["mean"]])
    assert not (out / "combine").exists()  # no methods: two_head trains, no frontier
