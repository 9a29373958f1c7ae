"""One steering-loop round on tiny models: it runs, and a round killed anywhere resumes exactly."""

import numpy as np
import pytest
import torch

from rmtension.data.types import Turn
from rmtension.loop import rounds
from rmtension.loop.reviewer import SimulatedReviewer
from rmtension.loop.rounds import RoundSpec, preference_pairs, run_round
from rmtension.policy.sampling import Policy
from rmtension.rl.rloo import snapshot
from tiny import tiny_causal_lm, tiny_reward_model, tiny_tokenizer

CONTEXTS = [(Turn("user", "name a tree"),), (Turn("user", "sky?"),), (Turn("user", "a river and a stone"),)]
SPEC = RoundSpec(round=1, seed=3, max_new_tokens=6, n_best_of=3, pm_steps=3, pm_batch=2, distill_steps=2)
REVIEWER = SimulatedReviewer(beta=2.0, epsilon=0.25, seed=9)


def gold(contexts, replies) -> np.ndarray:
    """Likes lower-case letters a..m (a judge a tiny policy can move on)."""
    return np.array([sum("a" <= ch <= "m" for ch in r) / max(1, len(r)) for r in replies])


def fresh():
    """(policy, reference, pm, pm tokenizer): the same initial models every call."""
    tok = tiny_tokenizer()
    model = tiny_causal_lm("llama", layers=2)
    policy = Policy(model, tok, [tok.eos_token_id], tok.pad_token_id, "tiny")
    return policy, snapshot(model, [n for n, _ in model.named_parameters()]), tiny_reward_model("llama"), tok


def play(folder, after_phase=None):
    policy, reference, pm, tok = fresh()
    result = run_round(folder, SPEC, policy, reference, pm, tok, CONTEXTS, gold, REVIEWER, after_phase)
    return result, policy, pm


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    return play(tmp_path_factory.mktemp("whole"))


def test_a_round_samples_labels_trains_the_pm_and_moves_the_policy(whole):
    result, policy, pm = whole
    assert len(result.pairs.a) == len(result.pairs.b) == len(CONTEXTS) == len(result.a_preferred)
    assert 0.0 <= result.flip_rate <= 1.0
    assert len(result.pm_losses) == SPEC.pm_steps and np.isfinite(result.pm_losses).all()
    assert len(result.distill_losses) == SPEC.distill_steps
    assert result.distill_losses[-1] < result.distill_losses[0]  # the NLL of the picks falls
    assert result.kl > 0.0
    assert all(0.0 <= g <= 1.0 for g in (result.gold_before, result.gold_picked, result.gold_after))
    initial, _, initial_pm, _ = fresh()
    assert any(not torch.equal(p, q) for p, q in zip(initial.model.parameters(), policy.model.parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(initial_pm.parameters(), pm.parameters()))


class Killed(Exception):
    pass


@pytest.mark.parametrize("kill", ["sample", "pm", "mid-improve"])
def test_a_round_killed_anywhere_resumes_exactly(tmp_path, monkeypatch, whole, kill):
    def die(phase):
        if phase == kill:
            raise Killed

    if kill == "mid-improve":  # dies after the distillation steps, before the policy is saved
        with monkeypatch.context() as m:
            m.setattr(rounds, "save_policy_folder", lambda *a: die("mid-improve"))
            with pytest.raises(Killed):
                play(tmp_path)
    else:
        with pytest.raises(Killed):
            play(tmp_path, die)
    result, policy, pm = play(tmp_path)
    expected, whole_policy, whole_pm = whole
    assert result == expected
    for (n, p), (_, q) in zip(whole_policy.model.named_parameters(), policy.model.named_parameters()):
        assert torch.equal(p, q), n
    for (n, p), (_, q) in zip(whole_pm.named_parameters(), pm.named_parameters()):
        assert torch.equal(p, q), n


def test_labelled_pairs_become_the_next_rounds_history(tmp_path, whole):
    result, _, _ = whole
    history = preference_pairs(CONTEXTS, result.pairs, result.a_preferred)
    for (chosen, rejected), a, b, pick in zip(history, result.pairs.a, result.pairs.b, result.a_preferred):
        assert chosen.endswith(a if pick else b) and rejected.endswith(b if pick else a)
        assert chosen.startswith("\n\nHuman: ")
    policy, reference, pm, tok = fresh()
    spec = RoundSpec(round=2, seed=3, max_new_tokens=6, n_best_of=3, pm_steps=3, pm_batch=2, distill_steps=1)
    with_history = run_round(
        tmp_path / "a", spec, policy, reference, pm, tok, CONTEXTS, gold, REVIEWER, history=history
    )
    policy, reference, pm, tok = fresh()
    alone = run_round(tmp_path / "b", spec, policy, reference, pm, tok, CONTEXTS, gold, REVIEWER)
    assert with_history.pairs == alone.pairs  # the same round, ...
    assert with_history.pm_losses != alone.pm_losses  # ... but its PM trains on D_1 as well


def test_a_folder_of_another_round_is_refused(tmp_path, whole):
    from rmtension.errors import ArtifactError

    (tmp_path / "spec.json").write_text('{"spec": {"round": 7}, "reviewer": {}}')
    policy, reference, pm, tok = fresh()
    with pytest.raises(ArtifactError, match="another spec"):
        run_round(tmp_path, SPEC, policy, reference, pm, tok, CONTEXTS, gold, REVIEWER)


class Fixed(torch.nn.Module):
    """A PM whose rewards are fixed numbers, one per row."""

    def __init__(self, rewards):
        super().__init__()
        self.rewards = torch.nn.Parameter(torch.tensor(rewards))

    def forward(self, input_ids, **_):
        return type("Out", (), {"logits": self.rewards[: len(input_ids), None]})()


def test_ensemble_pm_aggregates_worst_case_and_uncertainty_weighted():
    members = [Fixed([1.0, 3.0]), Fixed([2.0, 0.0])]
    ids = torch.zeros(2, 3, dtype=torch.long)
    wco = rounds.EnsemblePM(members, "wco")(input_ids=ids).logits[:, 0]
    assert wco.tolist() == [1.0, 0.0]
    # mean [1.5, 1.5], population variance [0.25, 2.25]: 1.5 - 2 x var
    uwo = rounds.EnsemblePM(members, "uwo", lam=2.0)(input_ids=ids).logits[:, 0]
    assert uwo.tolist() == pytest.approx([1.0, -3.0])


def test_distill_in_micro_batches_takes_the_steps_of_one_batch():
    """Accumulating the gradient over micro-batches (each padded on its own) gives the loss of one
    batch of every pick, step after step: the same objective, less memory."""
    tok = tiny_tokenizer()
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13], [14], [15, 16, 17, 18, 19]]
    picks = [[20, 21, 22], [23], [24, 25], [26, 27, 28, 29], [30, 31]]
    spec = RoundSpec(round=1, distill_steps=3, distill_lr=1e-3)
    runs = []
    for rows in (100, 2, 1):
        policy = Policy(tiny_causal_lm("llama", seed=3), tok, [tok.eos_token_id], tok.pad_token_id, "tiny")
        runs.append(rounds.distill(policy, prompts, picks, spec, rows=rows))
    whole = runs[0]
    assert whole[-1] < whole[0]  # the steps do lower the loss
    for losses in runs[1:]:
        assert losses == pytest.approx(whole, rel=1e-5)


def test_distilling_the_top_block_over_a_computed_trunk_equals_a_full_pass_with_the_rest_frozen():
    """`policy_trainable: top:1` runs block 0 once (`trunk_states`); the same steps with block 0 and the
    embeddings frozen by hand and every pass running the whole model give the same losses and weights."""
    from rmtension.model.arch import base_model

    prompt_ids = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    picks = [[20, 21, 22], [23, 24], [25]]
    spec = RoundSpec(round=1, distill_steps=3, distill_lr=1e-2, policy_trainable="top:1")
    ours, _, _, _ = fresh()
    start = {n: p.detach().clone() for n, p in ours.model.named_parameters()}
    got = rounds.distill(ours, prompt_ids, picks, spec, rows=2)
    by_hand, _, _, _ = fresh()
    base = base_model(by_hand.model)
    for p in list(base.embed_tokens.parameters()) + list(base.layers[0].parameters()):
        p.requires_grad_(False)
    for p in by_hand.model.lm_head.parameters():
        p.requires_grad_(False)
    want = rounds.distill(
        by_hand, prompt_ids, picks, RoundSpec(**{**spec.__dict__, "policy_trainable": "all"}), rows=2
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)
    after = dict(ours.model.named_parameters())
    for name, p in by_hand.model.named_parameters():
        torch.testing.assert_close(after[name], p, rtol=1e-3, atol=1e-4)  # Adam steps of 1e-2
        moved = not torch.equal(after[name], start[name])
        assert moved == (name.startswith("model.layers.1.") or name == "model.norm.weight"), name


def test_kl_with_the_unchanged_lower_block_shared_equals_two_full_passes():
    from rmtension.loop.measure import kl_per_reply, top_blocks_changed
    from rmtension.rl.rloo import kl_exact, pack, response_logprobs, swapped

    policy, reference, _, _ = fresh()
    with torch.no_grad():
        for p in policy.model.model.layers[1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    changed = [n for n, p in policy.model.named_parameters() if not torch.equal(p, reference[n])]
    assert top_blocks_changed(policy.model, changed) == 1
    # two replies per prompt, not adjacent: the trunk runs each prompt once for both (group 2)
    prompts = [[5, 6, 7], [8, 9], [5, 6, 7], [8, 9], [4], [4]]
    replies = [[10, 11], [12, 13, 14], [16], [17, 18], [15], [19, 20, 21]]
    batch = pack(prompts, replies, policy.pad_id)
    with torch.no_grad():
        _, logq = response_logprobs(policy.model, batch, False, full=True)
        with swapped(policy.model, reference):
            _, ref_logq = response_logprobs(policy.model, batch, False, full=True)
    want = kl_exact(logq, ref_logq, batch.response_mask).double().numpy()
    got = kl_per_reply(policy, reference, prompts, replies)
    assert (want > 0).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_kl_batches_keep_a_prompts_rows_together_and_order_prompts_by_length():
    from rmtension.loop.measure import kl_batches

    prompts = [[1, 2, 3], [4], [1, 2, 3], [4], [5, 6]]
    replies = [[9], [9], [9, 9], [9], [9]]
    # prompts by length: [4] (rows 1, 3), [5, 6] (row 4), [1, 2, 3] (rows 0, 2)
    assert kl_batches(prompts, replies, rows=16) == [([1, 3, 4, 0, 2], 1)]
    assert kl_batches(prompts, replies, rows=2) == [([1, 3], 2), ([4], 1), ([0, 2], 2)]
    assert kl_batches([[1], [1], [2], [2]], [[9]] * 4, rows=4) == [([0, 1, 2, 3], 2)]
