import numpy as np
import pytest
import torch

from rmtension.policy.config import PolicyConfig, RLConfig
from rmtension.policy.sampling import sample
from rmtension.model.scope import set_trainable
from rmtension.rl.rloo import (
    TRAIN_JUDGE,
    kl_exact,
    kl_per_sequence,
    pack,
    response_logprobs,
    rl_update,
    rloo_advantages,
    rloo_loss,
    snapshot,
    swapped,
    trunk_states,
)
from rmtension.rl.heldout import HeldOut, eval_points
from rmtension.rl.loop import run_rloo
from tiny import tiny_causal_lm

PROMPTS = [[5, 9, 44, 71, 100, 12], [8, 150], [77, 78, 79, 80, 81, 82, 83], [200, 201, 30]]
K = 4


def low_token_reward(responses: list[list[int]]) -> np.ndarray:
    """A judge that likes tokens below 130: learnable by a tiny policy."""
    return np.array([np.mean([t < 130 for t in r]) if r else 0.0 for r in responses])


def test_rloo_advantages_and_kl_by_hand():
    adv = rloo_advantages(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]]))
    assert adv.tolist() == [[-1.5, 0.0, 1.5], [-2.0, -2.0, 4.0]]
    assert torch.allclose(adv.sum(-1), torch.zeros(2))  # (k / (k - 1)) * (r - mean): sums to zero
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    assert kl_per_sequence(logp, ref, mask).tolist() == [0.5, 1.0]
    assert rloo_loss(logp, mask, torch.tensor([1.0, -2.0])).item() == pytest.approx(
        -(1.0 * -3.0 + -2.0 * -1.0) / 2
    )
    # exact KL over a two-token vocabulary: KL([.5, .5] || [.25, .75]) per unmasked position
    q = torch.tensor([0.5, 0.5]).log().expand(1, 2, 2)
    r = torch.tensor([0.25, 0.75]).log().expand(1, 2, 2)
    by_hand = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert kl_exact(q, r, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(by_hand)
    assert kl_exact(q, q, torch.ones(1, 2)).item() == 0.0


def test_pack_layout():
    b = pack([[5, 6, 7], [8]], [[1], [2, 3]], pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7, 1, 0], [0, 0, 8, 2, 3]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 0], [0, 0, 1, 1, 1]]
    assert b.response_ids.tolist() == [[1, 0], [2, 3]]
    assert b.response_mask.tolist() == [[1.0, 0.0], [1.0, 1.0]]


def draw(model, seed=0):
    s = sample(model, PROMPTS, n=K, max_new_tokens=8, temperature=1.0, stop_ids=[1], pad_id=0, seed=seed)
    prompts = [PROMPTS[i] for i in s.prompt_index]
    return s, pack(prompts, s.tokens, pad_id=0)


def test_response_logprobs_match_unpadded_forwards_with_and_without_the_trunk():
    model = tiny_causal_lm("llama", layers=3)
    s, batch = draw(model)
    full = response_logprobs(model, batch, bf16=False)
    cut = response_logprobs(model, batch, False, trunk_states(model, batch, 1, K), 1)
    for r in range(len(s)):
        ids = torch.tensor([PROMPTS[s.prompt_index[r]] + s.tokens[r]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].log_softmax(-1)
        n = len(s.tokens[r])
        expected = logits[-n - 1 : -1].gather(-1, ids[0, -n:, None]).squeeze(-1)
        torch.testing.assert_close(full[r, :n], expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cut[r, :n], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scope", ["top:1", "all"])
def test_one_rl_step_lowers_the_loss_and_moves_kl_off_zero(scope):
    torch.manual_seed(0)
    policy = tiny_causal_lm("llama", layers=3)
    names = set_trainable_policy(policy, scope)
    top = 3 if scope == "all" else 1
    ref = snapshot(policy, names)
    s, batch = draw(policy)
    rewards = torch.as_tensor(low_token_reward(s.tokens), dtype=torch.float32).view(len(PROMPTS), K)
    assert rewards.std() > 0
    trunk = trunk_states(policy, batch, top, K) if top < 3 else None
    with torch.no_grad(), swapped(policy, ref):
        ref_logp, ref_full = response_logprobs(policy, batch, False, trunk, top, full=True)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    out = rl_update(
        policy,
        opt,
        batch,
        rewards,
        ref_logp,
        kl_coef=0.05,
        max_grad_norm=1.0,
        bf16=False,
        trunk=trunk,
        top=top,
        ref_full=ref_full,
    )
    assert out["kl"] == 0.0 and out["kl_sample"] == 0.0  # the policy still equals the reference when scored
    changed = {n for n, p in policy.named_parameters() if not torch.equal(before[n], p)}
    assert changed == set(names)
    with torch.no_grad():
        logp, full = response_logprobs(policy, batch, False, trunk, top, full=True)
    after = rloo_loss(logp, batch.response_mask, out["advantages"]).item()
    assert after < out["loss"] - 1e-4
    assert kl_per_sequence(logp, ref_logp, batch.response_mask).abs().mean() > 1e-4
    kl = kl_exact(full, ref_full, batch.response_mask)
    assert (kl >= 0).all() and kl.mean() > 1e-4
    # the reference is untouched by the step
    with torch.no_grad(), swapped(policy, ref):
        torch.testing.assert_close(response_logprobs(policy, batch, False, trunk, top), ref_logp)


def set_trainable_policy(policy, scope: str) -> list[str]:
    """What `run_rloo` trains: the scope with the (tied) LM head frozen; the trainable names."""
    set_trainable(policy, scope, head=False)
    return [n for n, p in policy.named_parameters() if p.requires_grad]


def test_untied_lm_head_stays_frozen_under_top_k_but_a_score_head_trains():
    policy = tiny_causal_lm("llama", layers=3)
    policy.lm_head.weight = torch.nn.Parameter(policy.lm_head.weight.detach().clone())  # untie
    assert "lm_head.weight" not in set_trainable_policy(policy, "top:1")
    assert set_trainable(policy, "top:1", head=True) == 1 and policy.lm_head.weight.requires_grad


def test_trainable_scope_keeps_embeddings_frozen():
    policy = tiny_causal_lm("llama", layers=3)
    names = set_trainable_policy(policy, "top:1")
    assert names and all(n.startswith("model.layers.2.") or n == "model.norm.weight" for n in names)
    assert "model.norm.weight" in names
    assert set(set_trainable_policy(policy, "all")) == {n for n, _ in policy.named_parameters()}


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_run_rloo_logs_every_judge_and_trains_the_policy(precision):
    policy = tiny_causal_lm("llama", layers=3)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    cfg = RLConfig(steps=3, prompts_per_step=2, k=3, max_new_tokens=6, lr=1e-2, trainable="top:2", bf16=False)
    pcfg = PolicyConfig(precision=precision, batch_size=8)
    calls = []

    def score(prompt_idx, responses):
        calls.append(list(prompt_idx))
        r = low_token_reward(responses)
        return {TRAIN_JUDGE: r, "test_pm": -r}

    rows = run_rloo(policy, PROMPTS, score, cfg, pcfg, stop_ids=[1], pad_id=0).steps
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[0]["kl"] == 0.0 and rows[-1]["kl"] > 0.0 and all(r["kl"] >= 0 for r in rows)
    for r in rows:
        assert r["reward_test_pm"] == pytest.approx(-r["reward_train_pm"])
        assert np.isfinite(r["loss"])
    assert all(len(c) == 6 and len(set(c)) == 2 for c in calls)  # P prompts x k samples, grouped
    assert any(not torch.equal(before[n], p) for n, p in policy.named_parameters())
    assert torch.equal(before["model.embed_tokens.weight"], policy.model.embed_tokens.weight)


def test_eval_points():
    assert eval_points(12, 3) == [0, 3, 6, 9, 12]
    assert eval_points(10, 4) == [0, 4, 8, 10]
    assert eval_points(2, 5) == [0, 2]


def test_held_out_evaluation_leaves_training_unchanged_and_measures_the_policy():
    cfg = RLConfig(steps=3, prompts_per_step=2, k=2, max_new_tokens=5, lr=1e-2, trainable="top:1", bf16=False)
    pcfg = PolicyConfig(precision="fp32", batch_size=8)
    held_prompts = [[40, 41, 42], [90, 91], [7, 8, 9, 10]]
    seen = []

    def score(prompt_idx, responses):
        r = low_token_reward(responses)
        return {TRAIN_JUDGE: r, "test_pm": 0.5 * r}

    def held_score(prompt_idx, responses):
        seen.append(list(prompt_idx))
        return score(prompt_idx, responses)

    plain = run_rloo(tiny_causal_lm("llama", layers=3), PROMPTS, score, cfg, pcfg, [1], 0, seed=5)
    held = HeldOut(held_prompts, held_score, k=3, every=2, prompts_per_chunk=2)
    policy = tiny_causal_lm("llama", layers=3)
    run = run_rloo(policy, PROMPTS, score, cfg, pcfg, [1], 0, seed=5, heldout=held)
    untimed = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # noqa: E731
    assert len(run.steps) == 3 and untimed(run.steps) == untimed(plain.steps)
    assert sorted({r["step"] for r in run.evals}) == [0, 2, 3]
    assert len(run.evals) == 3 * len(held_prompts) * 3
    assert all(c == [p for p in range(3) for _ in range(3)] for c in seen)  # every held-out prompt, k times
    first = [r for r in run.evals if r["step"] == 0]
    assert all(r["kl"] == 0.0 for r in first)  # the initial policy is the reference
    last = [r for r in run.evals if r["step"] == 3]
    assert np.mean([r["kl"] for r in last]) > 0 and all(r["kl"] >= 0 for r in last)
    for r in run.evals:
        assert r["reward_test_pm"] == pytest.approx(0.5 * r["reward_train_pm"])
    # a completion's KL equals the exact KL computed straight from the final and the initial model
    # (the last evaluation follows the last update; fp32 samples from the policy itself, so redrawing
    # with the evaluation's seed gives the same completions)
    ref_model = tiny_causal_lm("llama", layers=3)
    r = last[4]
    from rmtension.rl.heldout import EVAL_SEED

    drawn = sample(
        policy,
        held_prompts,
        n=3,
        max_new_tokens=5,
        temperature=1.0,
        batch_size=8,
        stop_ids=[1],
        pad_id=0,
        seed=EVAL_SEED + 5 * 100003 + 3,
    )
    assert len(drawn.tokens[4]) == r["response_tokens"]
    ids = torch.tensor([held_prompts[r["prompt"]] + drawn.tokens[4]])
    n = len(drawn.tokens[4])
    with torch.no_grad():
        q = policy(input_ids=ids).logits[0, -n - 1 : -1].log_softmax(-1)
        p0 = ref_model(input_ids=ids).logits[0, -n - 1 : -1].log_softmax(-1)
    by_hand = float((q.exp() * (q - p0)).sum())
    assert r["kl"] == pytest.approx(by_hand, rel=1e-4, abs=1e-6)


def test_held_out_kl_skips_the_passes_while_the_policy_is_the_reference(monkeypatch):
    import rmtension.rl.heldout as heldout

    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return response_logprobs(*args, **kwargs)

    monkeypatch.setattr(heldout, "response_logprobs", counted)
    cfg = RLConfig(steps=3, prompts_per_step=2, k=2, max_new_tokens=5, lr=1e-2, trainable="top:1", bf16=False)
    pcfg = PolicyConfig(precision="fp32", batch_size=8)
    score = lambda idx, responses: {TRAIN_JUDGE: low_token_reward(responses)}  # noqa: E731
    held = HeldOut([[40, 41, 42], [90, 91], [7, 8, 9, 10]], score, k=3, every=2, prompts_per_chunk=2)
    run = run_rloo(tiny_causal_lm("llama", layers=3), PROMPTS, score, cfg, pcfg, [1], 0, seed=5, heldout=held)
    # evaluations at steps 0, 2 and 3, two chunks of prompts each, a policy and a reference pass per
    # chunk: step 0 (the reference's own weights) runs none
    assert sorted({r["step"] for r in run.evals}) == [0, 2, 3] and len(calls) == 2 * 2 * 2
    assert all(r["kl"] == 0.0 for r in run.evals if r["step"] == 0)
    assert np.mean([r["kl"] for r in run.evals if r["step"] == 3]) > 0


def test_rl_seed_is_a_deprecated_alias_of_seeds():
    assert RLConfig(seed=3).seeds == [3]
    assert RLConfig().seeds == [0]
    with pytest.raises(ValueError, match="deprecated alias"):
        RLConfig(seed=3, seeds=[1, 2])
    with pytest.raises(ValueError, match="distinct"):
        RLConfig(seeds=[1, 1])
    assert "seed" not in RLConfig(seed=3).model_dump()


def constructed_evals(slope=1.0, seeds=(0, 1), steps=(0, 2, 4, 6, 8), p=30, k=4, noise=0.5, seed=0):
    """Held-out rows whose pm_train reward is a per-prompt offset + slope * noise * sqrt(KL) + noise:
    `slope` within-prompt SDs per sqrt(nat); pm_test reads the same quality with its own offsets."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    off_a, off_b = rng.normal(size=p) * 2, rng.normal(size=p) * 2
    rows = []
    for s in seeds:
        for step in steps:
            kl = 0.05 * step * (1 + 0.1 * s)
            for i in range(p):
                for j in range(k):
                    e = noise * rng.normal()
                    q = slope * noise * np.sqrt(kl) + e
                    rows.append(
                        {
                            "objective": "helpful",
                            "seed": s,
                            "step": step,
                            "prompt": i,
                            "sample": j,
                            "kl": kl,
                            "reward_train_pm": off_a[i] + q,
                            "reward_test_pm": off_b[i] + q,
                            "reward_other_objective": -q,
                        }
                    )
    return pd.DataFrame(rows)


def test_rl_summary_recovers_the_trend_and_finds_no_gap_for_one_judge():
    import pandas as pd

    from rmtension.rl.summary import rl_summary

    ev = constructed_evals()
    steps = pd.DataFrame({"objective": "helpful", "seed": [0] * 8 + [1] * 8, "step": list(range(8)) * 2})
    sm = rl_summary(steps, ev, ["helpful"], 500, None, 0)["helpful"]
    assert sm["seeds"] == [0, 1] and sm["eval_steps"] == [0, 2, 4, 6, 8] and sm["steps"] == 8
    assert sm["within_sd"]["reward_train_pm"] == pytest.approx(0.5, rel=0.1)
    assert sm["trend"] == pytest.approx(1.0, abs=0.15)
    lo, hi = sm["trend_ci95"]
    assert lo < sm["trend"] < hi and lo > 0.5
    assert sm["curves"]["reward_other_objective"]["slope"] == pytest.approx(-1.0, abs=0.15)
    assert set(sm["by_seed"]) == {"0", "1"} and sm["seed_spread"]["n_seeds"] == 2
    assert sm["seed_spread"]["trend_min"] <= sm["trend"] <= sm["seed_spread"]["trend_max"] + 0.2
    assert sm["curves"]["reward_train_pm"]["ci_method"] == "blocks" and sm["block"] == 2
    # pm_test = pm_train + a per-prompt offset: no gap, no excess
    g = sm["gap"]
    assert g["gap"] == pytest.approx(0.0, abs=1e-9) and g["excess"] == pytest.approx(0.0, abs=1e-9)
    assert g["rho"] == pytest.approx(1.0) and g["step"] == 8


def test_rl_gap_matches_a_direct_computation():
    from rmtension.rl.summary import heldout_gap

    ev = constructed_evals(seeds=(0, 1), steps=(0, 4), p=12, k=3, seed=1)
    rng = np.random.default_rng(2)
    ev["reward_test_pm"] = 0.6 * ev["reward_train_pm"] + 0.4 * rng.normal(size=len(ev))
    g = heldout_gap(ev, 200, np.random.default_rng(0), 0.95)
    first, last = ev[ev["step"] == 0], ev[ev["step"] == 4]
    keys = ["seed", "prompt"]

    def sd(col):
        c = first[col] - first.groupby(keys)[col].transform("mean")
        return np.sqrt((c**2).sum() / (2 * 12 * (3 - 1))), c

    (sd_a, ca), (sd_b, cb) = sd("reward_train_pm"), sd("reward_test_pm")
    rho = (ca * cb).sum() / np.sqrt((ca**2).sum() * (cb**2).sum())
    gain = lambda col: (
        last[col].mean() - first[col].mean()
    )  # balanced: the mean of per-prompt gains  # noqa: E731
    za, zb = gain("reward_train_pm") / sd_a, gain("reward_test_pm") / sd_b
    assert g["gap"] == pytest.approx(za - zb) and g["rho"] == pytest.approx(rho)
    assert g["rtm"] == pytest.approx((1 - rho) * za) and g["excess"] == pytest.approx(rho * za - zb)
    assert g["excess_ci_low"] < g["excess"] < g["excess_ci_high"]


def test_rl_trend_with_two_evaluations_falls_back_to_the_prompt_bootstrap():
    import pandas as pd

    from rmtension.rl.summary import rl_summary

    ev = constructed_evals(seeds=(0,), steps=(0, 8))
    steps = pd.DataFrame({"objective": "helpful", "seed": 0, "step": range(8)})
    sm = rl_summary(steps, ev, ["helpful"], 300, None, 0)["helpful"]
    assert sm["curves"]["reward_train_pm"]["ci_method"] == "prompts"
    lo, hi = sm["trend_ci95"]
    assert np.isfinite([lo, hi]).all() and lo < sm["trend"] < hi
    assert np.isnan(sm["seed_spread"]["trend_sd"])


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_rl_samples_with_the_fused_decoder_and_repeats_itself(monkeypatch, precision):
    import rmtension.policy.sampling as policy_module
    from rmtension.policy.decode import LlamaDecoder

    made = []
    make = policy_module.make_decoder
    monkeypatch.setattr(
        policy_module, "make_decoder", lambda *a, **kw: made.append(make(*a, **kw)) or made[-1]
    )
    cfg = RLConfig(steps=2, prompts_per_step=2, k=2, max_new_tokens=5, lr=1e-2, trainable="top:1", bf16=False)
    pcfg = PolicyConfig(precision=precision, batch_size=8)

    def score(prompt_idx, responses):
        r = low_token_reward(responses)
        return {TRAIN_JUDGE: r, "test_pm": r}

    def run():
        held = HeldOut([[40, 41, 42], [90, 91]], score, k=2, every=1, prompts_per_chunk=2)
        out = run_rloo(
            tiny_causal_lm("llama", layers=3), PROMPTS, score, cfg, pcfg, [1], 0, seed=5, heldout=held
        )
        untimed = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in out.steps]
        return untimed, out.evals

    first, second = run(), run()
    assert made and all(isinstance(d, LlamaDecoder) for d in made)  # training and held-out sampling
    assert first == second
