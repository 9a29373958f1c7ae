import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rmtension.run import interrupt
from rmtension.config import TrainConfig
from rmtension.model.encode import EncodedPairs, encode_texts
from rmtension.errors import TrainingDiverged
from rmtension.model.forward import PairForward
from rmtension.model.scope import set_trainable
from rmtension.trainer.train import lr_lambda, train_reward_model
from rmtension.model.trunk import TrunkCache, trunk_fingerprint
from tiny import FAMILIES, tiny_reward_model, tiny_tokenizer

WORDS = ["apple", "tree", "house", "river", "sky", "stone", "cloud"]


def synthetic(tok, n, tag, seed=0):
    """Chosen replies say 'good', rejected ones 'bad': learnable in a few steps."""
    rng = np.random.default_rng(seed)
    ctx = [" ".join(rng.choice(WORDS, 4)) for _ in range(n)]
    c, _ = encode_texts([f"H: {x} A: good {x}" for x in ctx], tok, 48)
    r, _ = encode_texts([f"H: {x} A: bad {x}" for x in ctx], tok, 48)
    return EncodedPairs([f"{tag}/{i}" for i in range(n)], c, r, 0, 0)


def cfg(**kw):
    base = dict(
        epochs=2, batch_size=8, lr=3e-3, eval_every=2, checkpoint_every=3, bf16=False, trainable="all"
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture()
def data():
    tok = tiny_tokenizer("llama")
    return tok, synthetic(tok, 48, "train"), synthetic(tok, 16, "val", seed=1)


def stop_after_first_step(tok, tr, va, out_dir) -> None:
    """Train a tiny Llama RM (cfg(), seed 3) as if Ctrl-C arrived: it stops after its first optimiser
    step, with a checkpoint in `out_dir`."""
    interrupt._STOP.set()
    try:
        with pytest.raises(interrupt.Interrupted, match="step 1"):
            train_reward_model(
                tiny_reward_model("llama"), tok, tr, va, cfg(), seed=3, out_dir=out_dir, progress=False
            )
    finally:
        interrupt._STOP.clear()


def test_training_lowers_loss_changes_params_and_saves_a_loadable_model(tmp_path, data):
    tok, tr, va = data
    model = tiny_reward_model("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = train_reward_model(
        model, tok, tr, va, cfg(epochs=4), seed=0, out_dir=tmp_path / "rm", progress=False
    )
    losses = [l for _, l in res.metrics["loss"]]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert res.best_val_accuracy > 0.8
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    a = PairForward(model, tok.pad_token_id, False).score(va)
    b = PairForward(loaded, tok.pad_token_id, False).score(va)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    assert not (tmp_path / "rm" / "checkpoint").exists()
    for key in ("loss", "val_accuracy", "pairs_per_s", "tokens_per_s", "peak_memory_mb"):
        assert key in res.metrics


def test_without_validation_the_final_model_is_kept(tmp_path, data):
    tok, tr, va = data
    # With validation only at the last step, the kept model is the final one: the same weights as no validation.
    ref = tiny_reward_model("llama")
    train_reward_model(
        ref, tok, tr, va, cfg(eval_every=10_000), seed=0, out_dir=tmp_path / "a", progress=False
    )
    model = tiny_reward_model("llama")
    res = train_reward_model(
        model, tok, tr, None, cfg(eval_every=1), seed=0, out_dir=tmp_path / "b", progress=False
    )
    assert res.best_val_accuracy is None and res.best_step == res.metrics["steps"] == 12
    assert res.metrics["val_accuracy"] == [] and res.metrics["n_val"] == 0
    for (n, p), (_, q) in zip(ref.named_parameters(), model.named_parameters()):
        assert torch.equal(p, q), n


def test_disable_dropout_trains_like_a_model_without_dropout(tmp_path):
    from transformers import AutoModelForSequenceClassification as Auto

    from tiny import tiny_config

    tok = tiny_tokenizer("bert")
    tr, va = synthetic(tok, 24, "train"), synthetic(tok, 8, "val", seed=1)
    no_dropout = tiny_config("bert")
    no_dropout.hidden_dropout_prob = no_dropout.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    plain = Auto.from_config(no_dropout)
    losses = {}
    for name, disable in (("with", False), ("disabled", True)):
        model = tiny_reward_model("bert")  # the same seed, so the same weights; dropout 0.1 in its config
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), plain.parameters()))
        res = train_reward_model(
            model, tok, tr, va, cfg(disable_dropout=disable), seed=0, out_dir=tmp_path / name, progress=False
        )
        losses[name] = [l for _, l in res.metrics["loss"]]
    res = train_reward_model(plain, tok, tr, va, cfg(), seed=0, out_dir=tmp_path / "plain", progress=False)
    np.testing.assert_allclose(losses["disabled"], [l for _, l in res.metrics["loss"]], rtol=0, atol=1e-6)
    assert not np.allclose(losses["with"], losses["disabled"], rtol=0, atol=1e-6)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, data):
    tok, tr, va = data
    full = tiny_reward_model("llama")
    train_reward_model(full, tok, tr, va, cfg(), seed=3, out_dir=tmp_path / "full", progress=False)

    stop_after_first_step(tok, tr, va, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoint" / "state.json").exists()
    fresh = tiny_reward_model("llama")  # a new process would start from the base weights again
    res = train_reward_model(fresh, tok, tr, va, cfg(), seed=3, out_dir=tmp_path / "resumed", progress=False)
    for (n, p), (_, q) in zip(full.named_parameters(), fresh.named_parameters()):
        assert torch.equal(p, q), n
    assert res.metrics["loss"] == train_reward_model.__globals__["read_metrics"](tmp_path / "full")["loss"]


def test_a_checkpoint_killed_half_written_is_ignored_and_a_mismatched_launch_is_refused(tmp_path, data):
    """state.json names the last complete step folder: a half-written newer folder is never read."""
    from rmtension.errors import ArtifactError

    tok, tr, va = data
    full = tiny_reward_model("llama")
    train_reward_model(full, tok, tr, va, cfg(), seed=3, out_dir=tmp_path / "full", progress=False)
    stop_after_first_step(tok, tr, va, tmp_path / "r")
    ckpt = tmp_path / "r" / "checkpoint"
    (ckpt / "step2").mkdir()
    (ckpt / "step2" / "trainable.safetensors").write_bytes(b"killed half way")
    state = json.loads((ckpt / "state.json").read_text())
    (ckpt / "state.json").write_text(json.dumps({**state, "deepspeed": "DeepSpeed ZeRO-2 with 2 processes"}))
    with pytest.raises(
        ArtifactError, match="written under DeepSpeed ZeRO-2 with 2 processes; resume it under the"
    ):
        train_reward_model(
            tiny_reward_model("llama"), tok, tr, va, cfg(), seed=3, out_dir=tmp_path / "r", progress=False
        )
    (ckpt / "state.json").write_text(json.dumps({k: v for k, v in state.items() if k != "folder"}))
    with pytest.raises(ArtifactError, match="older layout"):
        train_reward_model(
            tiny_reward_model("llama"), tok, tr, va, cfg(), seed=3, out_dir=tmp_path / "r", progress=False
        )
    (ckpt / "state.json").write_text(json.dumps(state))
    fresh = tiny_reward_model("llama")
    train_reward_model(fresh, tok, tr, va, cfg(), seed=3, out_dir=tmp_path / "r", progress=False)
    for (n, p), (_, q) in zip(full.named_parameters(), fresh.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_cached_trunk_training_keeps_the_trunk_and_resumes_exactly(tmp_path, family):
    """With trainable=top:1 over a trunk cache: the frozen blocks are untouched, the saved model
    is the best one, and an interrupted run resumes to the same weights (BERT has dropout)."""
    tok = tiny_tokenizer(family)
    tr, va = synthetic(tok, 48, "train"), synthetic(tok, 16, "val", seed=1)

    def run(out, stop=False):
        model = tiny_reward_model(family, layers=3)
        k = set_trainable(model, "top:1")
        cache = TrunkCache(k, trunk_fingerprint(model, k))
        for enc in (tr, va):
            cache.add(model, enc, tok.pad_token_id, bf16=False)
        if stop:
            interrupt._STOP.set()
        try:
            res = train_reward_model(
                model,
                tok,
                tr,
                va,
                cfg(trainable="top:1", epochs=3),
                seed=1,
                out_dir=out,
                cache=cache,
                progress=False,
            )
        finally:
            interrupt._STOP.clear()
        return model, res

    base = tiny_reward_model(family, layers=3).state_dict()
    full, res = run(tmp_path / "full")
    state = full.state_dict()
    moved = [n for n in state if not torch.equal(state[n], base[n])]
    probe = tiny_reward_model(family, layers=3)
    set_trainable(probe, "top:1")
    trainable = {n for n, p in probe.named_parameters() if p.requires_grad}
    assert moved and set(moved) <= trainable and any(".2." in n for n in moved), moved
    assert trunk_fingerprint(full, 1) == trunk_fingerprint(tiny_reward_model(family, layers=3), 1)
    # the saved model scores val at the best val accuracy it reported
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "full")
    r_c, r_r = PairForward(loaded, tok.pad_token_id, False).score(va)
    assert np.mean(r_c > r_r) + 0.5 * np.mean(r_c == r_r) == pytest.approx(res.best_val_accuracy)

    with pytest.raises(interrupt.Interrupted):
        run(tmp_path / "resumed", stop=True)
    resumed, _ = run(tmp_path / "resumed")
    for (n, p), (_, q) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.equal(p, q), n


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, data, monkeypatch):
    import rmtension.trainer.train as train_mod

    tok, tr, va = data
    calls = {"n": 0}
    real = train_mod.bradley_terry_loss

    def flaky(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] > 4 else out

    monkeypatch.setattr(train_mod, "bradley_terry_loss", flaky)
    with pytest.raises(TrainingDiverged, match="step 4"):
        train_reward_model(
            tiny_reward_model("llama"),
            tok,
            tr,
            va,
            cfg(checkpoint_every=3),
            seed=0,
            out_dir=tmp_path / "rm",
            progress=False,
        )
    ckpt = tmp_path / "rm" / "checkpoint"
    assert json.loads((ckpt / "state.json").read_text())["folder"] == "step3"
    assert sorted(p.name for p in ckpt.iterdir()) == ["state.json", "step3"]
    assert (ckpt / "step3" / "trainable.safetensors").exists() and (ckpt / "step3" / "optim.pt").exists()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scope", ["top:1", "head"])
def test_trunk_cache_gives_the_same_rewards_as_the_full_model(family, scope):
    tok = tiny_tokenizer(family)
    enc = synthetic(tok, 12, f"{family}{scope}")
    model = tiny_reward_model(family)
    k = set_trainable(model, scope)
    cache = TrunkCache(k, trunk_fingerprint(model, k))
    cache.add(model, enc, tok.pad_token_id, batch_size=5, bf16=False)
    full = PairForward(model, tok.pad_token_id, False).score(enc, batch_size=4)
    with PairForward(model, tok.pad_token_id, False, cache) as fwd:
        cut = fwd.score(enc, batch_size=4)
    np.testing.assert_allclose(cut[0], full[0], atol=1e-5)
    np.testing.assert_allclose(cut[1], full[1], atol=1e-5)
    # the context manager restored the full model
    assert len(list(model.base_model.modules())) == len(list(tiny_reward_model(family).base_model.modules()))


def test_trainable_scopes_freeze_the_right_parameters():
    model = tiny_reward_model("llama", layers=3)
    assert set_trainable(model, "head") == 0
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"score.weight"}
    assert set_trainable(model, "top:1") == 1
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("model.layers.2.") for n in trainable)
    assert not any(
        n.startswith(("model.layers.0.", "model.layers.1.", "model.embed_tokens")) for n in trainable
    )
    with pytest.raises(ValueError, match="only 3 layers"):
        set_trainable(model, "top:4")


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert lr_lambda(0, 4, 10, "linear") == pytest.approx(0.25)
    assert lr_lambda(3, 4, 10, "linear") == pytest.approx(1.0)
    assert lr_lambda(10, 4, 10, "linear") == pytest.approx(0.0)
    assert lr_lambda(7, 4, 10, "cosine") == pytest.approx(0.5)
    assert lr_lambda(9, 4, 10, "constant") == 1.0


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path, data):
    tok, tr, va = data

    def run(out, key, lr):
        interrupt._STOP.set()
        try:
            with pytest.raises(interrupt.Interrupted, match="step 1"):
                train_reward_model(
                    tiny_reward_model("llama"),
                    tok,
                    tr,
                    va,
                    cfg(lr=lr),
                    3,
                    out,
                    progress=False,
                    resume_key=key,
                )
        finally:
            interrupt._STOP.clear()
        model = tiny_reward_model("llama")
        res = train_reward_model(model, tok, tr, va, cfg(lr=lr), 3, out, progress=False, resume_key=key)
        return model, res

    # a checkpoint written under key "a" with lr 1e-2, then the run asked for under key "b" with lr 3e-3
    stopped = tmp_path / "mixed"
    interrupt._STOP.set()
    try:
        with pytest.raises(interrupt.Interrupted):
            train_reward_model(
                tiny_reward_model("llama"),
                tok,
                tr,
                va,
                cfg(lr=1e-2),
                3,
                stopped,
                progress=False,
                resume_key="a",
            )
    finally:
        interrupt._STOP.clear()
    switched = tiny_reward_model("llama")
    train_reward_model(switched, tok, tr, va, cfg(lr=3e-3), 3, stopped, progress=False, resume_key="b")
    fresh = tiny_reward_model("llama")
    train_reward_model(
        fresh, tok, tr, va, cfg(lr=3e-3), 3, tmp_path / "fresh", progress=False, resume_key="b"
    )
    for a, b in zip(switched.parameters(), fresh.parameters()):
        assert torch.equal(a, b)  # started over, as a run without the stale checkpoint
    # the same key resumes (to the uninterrupted run's weights)
    resumed, _ = run(tmp_path / "same", "b", 3e-3)
    for a, b in zip(resumed.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
