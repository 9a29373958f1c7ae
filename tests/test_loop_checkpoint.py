"""Saving the RL policy: an HF folder that reloads to the same log-probs, and checkpoints that resume exactly."""

import numpy as np
import pytest
import torch

from rmtension.errors import ArtifactError
from rmtension.loop.checkpoint import load_rl_checkpoint, save_policy_folder, save_rl_checkpoint
from rmtension.policy.config import PolicyConfig, RLConfig
from rmtension.policy.sampling import load_policy
from rmtension.rl.rloo import TRAIN_JUDGE
from rmtension.rl.heldout import HeldOut
from rmtension.rl.loop import run_rloo
from tiny import tiny_causal_lm, tiny_tokenizer

PROMPTS = [[5, 9, 44, 71, 100, 12], [8, 150], [77, 78, 79, 80, 81, 82, 83], [200, 201, 30]]
HELD = [[40, 41, 42], [90, 91]]
CFG = RLConfig(steps=4, prompts_per_step=2, k=3, max_new_tokens=6, lr=1e-2, trainable="top:2", bf16=False)
ONE_STEP = CFG.model_copy(update={"steps": 1})
PCFG = PolicyConfig(precision="fp32", batch_size=8)


def score(prompt_idx, responses):
    """Likes tokens below 130 (learnable by a tiny policy)."""
    r = np.array([np.mean([t < 130 for t in x]) if x else 0.0 for x in responses])
    return {TRAIN_JUDGE: r, "test_pm": -r}


def rl_run(policy, cfg: RLConfig, **kw):
    """`run_rloo` of `policy` on the tiny prompts and `score`, one objective, train judge 0."""
    return run_rloo(policy, PROMPTS, score, cfg, PCFG, [1], 0, **kw)


def untimed(rows):
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]


def direct_logprobs(model, ids: list[int]) -> torch.Tensor:
    """[T-1] log p(ids[t] | ids[:t]) from one plain forward."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = model(input_ids=x).logits[0, :-1].log_softmax(-1)
    return logp.gather(-1, x[0, 1:, None]).squeeze(-1)


def test_saved_policy_reloads_to_the_same_logprobs(tmp_path):
    policy = tiny_causal_lm("llama", layers=3)
    rl_run(policy, CFG.model_copy(update={"steps": 2}), seed=1)
    folder = save_policy_folder(policy, tiny_tokenizer(), tmp_path / "policy")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    reloaded = load_policy(str(folder), precision="fp32")
    fresh = tiny_causal_lm("llama", layers=3)
    ids = [5, 9, 44, 71, 100, 12, 3, 17, 250]
    assert torch.equal(direct_logprobs(reloaded, ids), direct_logprobs(policy, ids))
    assert not torch.equal(direct_logprobs(fresh, ids), direct_logprobs(policy, ids))  # RL moved it


class Killed(Exception):
    pass


def held() -> HeldOut:
    return HeldOut(HELD, score, k=2, every=2, prompts_per_chunk=2)


@pytest.fixture(scope="module")
def uninterrupted():
    """(policy, run) of the whole RL run, shared by the resume tests."""
    policy = tiny_causal_lm("llama", layers=3)
    return policy, rl_run(policy, CFG, seed=4, heldout=held())


@pytest.mark.parametrize("kill_after", [2, 3])  # 2 is an evaluation point (every 2), 3 is not
def test_rl_run_resumed_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path, kill_after, uninterrupted):
    whole_policy, whole = uninterrupted

    path = tmp_path / "rl.ckpt"

    def save_then_die(state):
        save_rl_checkpoint(path, state)
        if state.step == kill_after:
            torch.manual_seed(1234)  # the dying process leaves other generator states behind
            raise Killed

    with pytest.raises(Killed):
        rl_run(tiny_causal_lm("llama", layers=3), CFG, seed=4, heldout=held(), checkpoint=save_then_die)
    state = load_rl_checkpoint(path)
    assert state.step == kill_after and len(state.steps) == kill_after
    resumed_policy = tiny_causal_lm("llama", layers=3)  # the initial policy: the KL reference
    resumed = rl_run(resumed_policy, CFG, seed=4, heldout=held(), resume=state)
    assert untimed(resumed.steps) == untimed(whole.steps)
    assert resumed.evals == whole.evals
    for (n, p), (_, q) in zip(whole_policy.named_parameters(), resumed_policy.named_parameters()):
        assert torch.equal(p, q), n
    ids = PROMPTS[0] + [3, 17, 99]
    assert torch.equal(direct_logprobs(resumed_policy, ids), direct_logprobs(whole_policy, ids))


def test_checkpoint_restores_the_global_generators(tmp_path):
    seen = []

    def keep(state):
        seen.append(state)

    torch.manual_seed(7)
    np.random.seed(7)
    rl_run(tiny_causal_lm("llama"), ONE_STEP, checkpoint=keep)
    expected = (torch.rand(3), np.random.rand(3))
    save_rl_checkpoint(tmp_path / "c.ckpt", seen[0])
    torch.manual_seed(0)
    np.random.seed(0)
    rl_run(tiny_causal_lm("llama"), ONE_STEP, resume=load_rl_checkpoint(tmp_path / "c.ckpt"))
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])


def test_a_broken_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="no RL checkpoint"):
        load_rl_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="not a readable RL checkpoint"):
        load_rl_checkpoint(tmp_path / "bad.ckpt")


def test_a_checkpoint_of_other_trainable_parameters_is_a_config_error():
    from rmtension.errors import ConfigError

    seen = []
    rl_run(tiny_causal_lm("llama", layers=3), ONE_STEP, checkpoint=seen.append)
    other = ONE_STEP.model_copy(update={"steps": 2, "trainable": "top:1"})
    with pytest.raises(ConfigError, match="a different rl.trainable"):
        rl_run(tiny_causal_lm("llama", layers=3), other, resume=seen[0])
