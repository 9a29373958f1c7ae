"""The whole steering loop at tiny size: every arm and seed, its files, exact resume, the placebo."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from rmtension.data.types import Turn
from rmtension.loop.capability import generate_items
from rmtension.loop.config import LoopConfig
from rmtension.loop.measure import Probes, agreement, top_quartile
from rmtension.loop.results import nested_bootstrap
from rmtension.loop.study import LoopParts, run_loop
from rmtension.policy.sampling import Policy
from rmtension.stats.verdicts import SUPPORTED
from tiny import tiny_causal_lm, tiny_reward_model, tiny_tokenizer

WORDS = ["apple", "tree", "house", "river", "sky", "stone", "cloud", "bird", "lamp"]


def gold(contexts, replies) -> np.ndarray:
    """Likes lower-case letters a..m (a judge a tiny policy can move on)."""
    return np.array([sum("a" <= ch <= "m" for ch in r) / max(1, len(r)) for r in replies])


def ask(i: int) -> tuple[Turn, ...]:
    return (Turn("user", f"{WORDS[i % len(WORDS)]} {WORDS[(3 * i + 1) % len(WORDS)]}?"),)


def tiny_parts() -> LoopParts:
    tok = tiny_tokenizer()

    def new_policy():
        return Policy(tiny_causal_lm("llama", layers=1), tok, [tok.eos_token_id], tok.pad_token_id, "tiny")

    d0 = [(ask(i), f"{WORDS[i % 9]} and {WORDS[(i + 2) % 9]}", "zz yy " * (i % 3 + 1)) for i in range(6)]
    probes = Probes(
        heldout=[ask(20 + i) for i in range(4)],
        capability=generate_items(4, seed=0),
        xstest_respond=[ask(40)],
        xstest_refuse=[ask(41)],
        max_new_tokens=5,
        max_prompt_tokens=64,
    )
    return LoopParts(
        new_policy,
        lambda: tiny_reward_model("llama", layers=1),
        tok,
        gold,
        d0,
        [ask(100 + i) for i in range(6)],
        probes,
    )


CONFIG = {
    "seeds": [0, 1],
    "rounds": 2,
    "prompts_per_round": 3,
    "heldout_prompts": 4,
    "d0_pairs": 6,
    "weight_path": [0.0, 1.0],
    "bootstrap": 200,
    "pm": {"steps0": 2, "steps": 2, "batch": 3, "lr": 1e-3, "max_length": 128},
    "round": {
        "max_new_tokens": 5,
        "max_prompt_tokens": 64,
        "n_best_of": 3,
        "distill_steps": 2,
        "distill_lr": 1e-3,
    },
    "reviewer": {"beta": 4.0, "epsilon": 0.25, "seed": 11},
    "arms": {
        "online": {},
        "offline": {"pm": "offline"},
        "length": {"shortcuts": [{"kind": "length", "weight": 0.5}]},
        "placebo": {"shortcuts": [{"kind": "length", "weight": 0.0}], "noise_seed": 12},
        "ensemble": {"pm": "ensemble", "ensemble": 2, "aggregate": "wco"},
    },
    "claims": {
        "online_beats_offline": 0.02,
        "offline_judge_fades_at_high_end": 0.1,
        "shortcut_steers_policy": {"length": 1.0},
        "alignment_tax": 0.05,
    },
}


def loop_files(out) -> dict:
    """Every measure, label and weight-path file under out/loop, by relative path."""
    root = out / "loop"
    keep = ("measure.json", "labels.json", "weight_path.json", "pairs.json", "improve.json", "rounds.csv")
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.name in keep}


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("loop")
    lines: list[str] = []
    run_loop(out, LoopConfig.model_validate(CONFIG), tiny_parts(), progress=lines.append)
    (out / "progress.txt").write_text("\n".join(lines))
    return out


def test_the_loop_writes_a_row_per_arm_seed_and_round(whole):
    rows = pd.read_csv(whole / "loop" / "rounds.csv")
    assert len(rows) == 5 * 2 * 3
    said = (whole / "progress.txt").read_text().splitlines()  # one line as each seed and arm starts
    assert said == [f"seed {s}, arm {a}" for s in CONFIG["seeds"] for a in CONFIG["arms"]]
    assert set(rows["round"]) == {0, 1, 2}
    assert (rows["flip_rate"].between(0, 1)).all() and (rows.loc[rows["round"] > 0, "kl"] > 0).all()
    # round 0 is π_0 for every arm: same gold on the same held-out draws
    zero = rows[rows["round"] == 0].groupby("seed")["gold"].nunique()
    assert (zero == 1).all()
    loop = json.loads((whole / "loop" / "loop.json").read_text())
    assert set(loop["arms"]) == set(CONFIG["arms"])
    entry = loop["arms"]["online"]["rounds"][2]["gold"]
    assert entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1]
    assert [w["lambda"] for w in loop["arms"]["online"]["weight_path"]] == [0.0, 1.0]


def test_round_zero_is_shared_where_the_reviewer_is_the_same(whole):
    zeros = sorted(p.name for p in (whole / "loop" / "round0").iterdir())
    assert len(zeros) == 4  # online and offline share one; length, placebo and ensemble have their own
    rows = pd.read_csv(whole / "loop" / "rounds.csv")
    r0 = rows[rows["round"] == 0].set_index(["arm", "seed"])
    assert r0.loc[("online", 0), "agree_pm0"] == r0.loc[("offline", 0), "agree_pm0"]


def test_the_offline_arm_keeps_pm0_and_the_online_arm_retrains(whole):
    loop = whole / "loop"
    rows = pd.read_csv(loop / "rounds.csv")
    off = rows[rows["arm"] == "offline"]
    assert (off["agree_pm0"] == off["agree_pmr"]).all()
    cfg = LoopConfig.model_validate(CONFIG)
    pm0 = load_file(loop / "round0" / cfg.round0_key("online") / "seed0" / "pm" / "model.safetensors")
    for arm, same in (("offline", True), ("online", False)):
        pm2 = load_file(loop / "arms" / arm / "seed0" / "round2" / "pm" / "model.safetensors")
        assert all(torch.equal(pm0[k], pm2[k]) for k in pm0) == same, arm


def test_the_zero_weight_placebo_is_not_supported(whole):
    fs = {f["id"]: f for f in json.loads((whole / "loop" / "findings.json").read_text())["findings"]}
    assert {"online_beats_offline", "offline_judge_fades_at_high_end", "alignment_tax"} <= fs.keys()
    placebo = fs["shortcut_steers_policy:placebo"]
    assert placebo["numbers"]["placebo"] is True
    assert placebo["verdict"] != SUPPORTED
    assert fs["shortcut_steers_policy:length"]["numbers"]["placebo"] is False


class Killed(Exception):
    pass


def test_a_loop_killed_mid_round_resumes_to_identical_outputs(tmp_path, whole):
    seen = []

    def die(phase):
        seen.append(phase)
        if seen.count("pm") == 2:  # seed 0, online, round 2: after its pm phase, before improve
            raise Killed

    cfg = LoopConfig.model_validate(CONFIG)
    with pytest.raises(Killed):
        run_loop(tmp_path, cfg, tiny_parts(), after_phase=die)
    assert seen == ["sample", "label", "pm", "improve", "measure", "sample", "label", "pm"]
    run_loop(tmp_path, cfg, tiny_parts())
    assert loop_files(tmp_path) == loop_files(whole)


def test_the_weight_path_ends_read_from_the_round_measures_equal_fresh_draws(whole, tmp_path):
    """λ = 0 and 1 are read from π_0's and π_R's measure.json; sampling them again gives the same rows."""
    from rmtension.loop.study import load_trained_policy, weight_path
    from rmtension.rl.rloo import snapshot

    cfg = LoopConfig.model_validate(CONFIG)
    parts = tiny_parts()
    start = parts.new_policy()
    reference = snapshot(start.model, [n for n, _ in start.model.named_parameters()])
    seed_dir = whole / "loop" / "arms" / "online" / "seed1"
    policy = load_trained_policy(seed_dir / f"round{cfg.rounds}", start)
    weight_path(tmp_path, cfg, policy, reference, parts, 1)  # no ends given: every λ sampled
    fresh = json.loads((tmp_path / "weight_path.json").read_text())
    stored = json.loads((seed_dir / "weight_path.json").read_text())
    assert [row["lambda"] for row in fresh] == [0.0, 1.0]
    assert fresh == stored
    assert max(fresh[0]["kl"]) == 0 < min(fresh[1]["kl"])  # π_0 and π_R: two different ends


def test_agreement_and_top_quartile_on_hand_worked_pairs():
    got = agreement(
        np.array([1.0, 0.0, 2.0, 5.0]),
        np.array([0.0, 1.0, 2.0, 1.0]),
        np.array([3, 3, 1, 2.0]),
        np.array([1, 1, 0, 2.0]),
    )
    np.testing.assert_array_equal(got[:3], [1.0, 0.0, 0.0])  # a judge's tie disagrees
    assert np.isnan(got[3])  # gold ties: no order to agree with
    np.testing.assert_array_equal(
        top_quartile(np.array([1.0, 2, 3, 4, 5, 6, 7, 8])), [0, 0, 0, 0, 0, 0, 1, 1]
    )


def test_nested_bootstrap_of_constant_and_two_valued_cells():
    mean, ci, sd = nested_bootstrap(np.full((2, 5), 0.3), 100)
    assert mean == pytest.approx(0.3) and ci == pytest.approx([0.3, 0.3]) and sd == pytest.approx(0.0)
    v = np.array([[0.0, np.nan], [1.0, 1.0]])  # NaN cells are left out of each draw's mean
    mean, ci, _ = nested_bootstrap(v, 400)
    assert mean == pytest.approx(2 / 3) and 0.0 <= ci[0] <= ci[1] <= 1.0


def test_the_report_section_is_written_from_the_loop_files(whole):
    from rmtension.loop.report import write_loop_report

    page = write_loop_report(whole).read_text()
    assert "The steering loop" in page and "shortcut_steers_policy" not in page  # statements, not ids
    fs = json.loads((whole / "loop" / "findings.json").read_text())["findings"]
    assert all(f["verdict"] in page for f in fs)
    assert (whole / "loop" / "report" / "figures" / "loop_gold_kl.png").exists()


def test_a_bad_loop_config_is_one_line_naming_file_and_key(tmp_path):
    from rmtension.errors import ConfigError
    from rmtension.loop.config import load_loop_config

    bad = tmp_path / "loop.yaml"
    bad.write_text(json.dumps({**CONFIG, "rounds": 0}))
    with pytest.raises(ConfigError, match=r"loop.yaml: rounds: .*greater than or equal to 1"):
        load_loop_config(bad)
    placebo = {
        **CONFIG,
        "arms": {**CONFIG["arms"], "placebo": {"shortcuts": [{"kind": "length", "weight": 0.1}]}},
    }
    bad.write_text(json.dumps(placebo))
    with pytest.raises(ConfigError, match="placebo arm 'placebo' needs shortcuts of weight 0"):
        load_loop_config(bad)
    hedging = {
        **CONFIG,
        "arms": {**CONFIG["arms"], "hedge": {"shortcuts": [{"kind": "confidence", "weight": 1}]}},
    }
    hedging["claims"] = {**CONFIG["claims"], "shortcut_steers_policy": {"length": 5.0}}
    bad.write_text(json.dumps(hedging))
    with pytest.raises(ConfigError, match="arm 'hedge' has a confidence shortcut but .* no margin"):
        load_loop_config(bad)
    bad.write_text(json.dumps({**CONFIG, "weight_path_arms": ["onlin"]}))
    with pytest.raises(ConfigError, match=r"weight_path_arms names \['onlin'\]"):
        load_loop_config(bad)
    bad.write_text(json.dumps({**CONFIG, "heldout_between": CONFIG["heldout_prompts"] + 1}))
    with pytest.raises(ConfigError, match="heldout_between .* is more than heldout_prompts"):
        load_loop_config(bad)


def test_a_run_directory_resumes_only_with_its_own_config(tmp_path):
    """Resuming with another config would mix its rounds with the old ones' files: refused, naming
    the keys; the claims' margins may change, since they are read from the files afterwards."""
    from rmtension.errors import ConfigError
    from rmtension.loop.study import claim_run_dir

    loop = tmp_path / "run" / "loop"
    cfg = LoopConfig.model_validate(CONFIG)
    claim_run_dir(loop, cfg)
    assert json.loads((loop / "config.json").read_text())["rounds"] == CONFIG["rounds"]
    claim_run_dir(loop, cfg)  # the same config resumes
    claims = {**CONFIG["claims"], "alignment_tax": CONFIG["claims"]["alignment_tax"] * 2}
    claim_run_dir(loop, LoopConfig.model_validate({**CONFIG, "claims": claims}))
    gold = {**CONFIG.get("gold", {}), "steps": 7}
    other = LoopConfig.model_validate({**CONFIG, "rounds": CONFIG["rounds"] + 1, "gold": gold})
    (loop / "gold").mkdir()  # something trained: the config is now this folder's
    with pytest.raises(ConfigError, match=r"another loop config \(gold, rounds differ\)"):
        claim_run_dir(loop, other)
    (loop / "gold").rmdir()  # nothing trained (the run stopped at once): the new config takes over
    claim_run_dir(loop, other)
    assert json.loads((loop / "config.json").read_text())["rounds"] == CONFIG["rounds"] + 1
    (loop / "gold").mkdir()
    stored = json.loads((loop / "config.json").read_text())  # written by an older version: fewer keys,
    del stored["gold"]["trainable"]  # the defaults it did not know are no change
    (loop / "config.json").write_text(json.dumps(stored))
    claim_run_dir(loop, other)
    del stored["round"]["draw_rows"]  # written before the batch plan was recorded: its draws differ
    (loop / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match="drew in decode batches of 32 rows without recording it"):
        claim_run_dir(loop, other)
    (loop / "config.json").write_text("[]")
    with pytest.raises(ConfigError, match="config.json: not a loop config"):
        claim_run_dir(loop, other)


def test_a_run_is_not_resumed_in_another_precision(tmp_path, monkeypatch):
    """A loop that ran in bf16 (asked for and native) is not continued in fp32 on another machine."""
    from rmtension.errors import ConfigError
    from rmtension.loop import study

    loop = tmp_path / "run" / "loop"
    cfg = LoopConfig.model_validate({**CONFIG, "precision": "bf16"})
    monkeypatch.setattr(study, "use_bf16", lambda requested, device="cpu": bool(requested))  # a bf16 machine
    study.claim_run_dir(loop, cfg)
    assert json.loads((loop / "precision.json").read_text()) == {"bf16": True, "workers": 1}
    (loop / "gold").mkdir()  # something trained
    study.claim_run_dir(loop, cfg)  # the same kind of machine resumes
    monkeypatch.setattr(study, "use_bf16", lambda requested, device="cpu": False)  # an AVX2 machine
    with pytest.raises(ConfigError, match="ran in bf16, and this machine would continue it in fp32"):
        study.claim_run_dir(loop, cfg)
    (loop / "gold").rmdir()  # nothing trained yet: the folder takes this machine's precision
    study.claim_run_dir(loop, cfg)
    assert json.loads((loop / "precision.json").read_text()) == {"bf16": False, "workers": 1}
    (loop / "gold").mkdir()
    two = LoopConfig.model_validate({**CONFIG, "precision": "bf16", "workers": 2})  # 2 seeds: 2 workers
    with pytest.raises(
        ConfigError,
        match="ran with 1 worker\\(s\\), this would continue it with 2; resume it with --workers 1",
    ):
        study.claim_run_dir(loop, two)  # the config may differ in workers, precision.json may not
    (loop / "precision.json").write_text(json.dumps({"bf16": False}))  # an older run: bf16 checked only
    study.claim_run_dir(loop, two)
    assert json.loads((loop / "precision.json").read_text()) == {"bf16": False}


def test_loop_config_folders_resolve_beside_the_config(tmp_path, monkeypatch):
    """A relative data_path / xstest_path / gold judge names a folder beside the config (or in its
    parent), wherever the command runs; a path that exists from the working directory stays as given."""
    from rmtension.loop.config import load_loop_config

    (tmp_path / "project" / "configs").mkdir(parents=True)
    for folder in ("project/configs/hh", "project/xs", "project/judge"):
        (tmp_path / folder).mkdir()
    config = tmp_path / "project" / "configs" / "loop.yaml"
    gold = {**CONFIG.get("gold", {}), "judges": ["judge", "hub-org/some-judge"]}
    config.write_text(json.dumps({**CONFIG, "data_path": "hh", "xstest_path": "xs", "gold": gold}))
    monkeypatch.chdir(tmp_path)
    cfg = load_loop_config(config)
    assert cfg.data_path == str(tmp_path / "project" / "configs" / "hh")
    assert cfg.xstest_path == str(tmp_path / "project" / "xs")  # the config folder's parent
    assert cfg.gold.judges == [str(tmp_path / "project" / "judge"), "hub-org/some-judge"]  # a hub id stays
    (tmp_path / "hh").mkdir()  # there from the working directory: that one, recorded absolute
    assert load_loop_config(config).data_path == str(tmp_path / "hh")


def test_gold_top_k_trains_only_its_top_blocks_and_head(tmp_path):
    """gold.trainable top:1: the embeddings and every block below the top stay as loaded; the top
    block and the score head move (the BERT backbone, as MiniLM)."""
    from rmtension.data.types import Pair
    from rmtension.loop.config import GoldConfig
    from rmtension.loop.gold import build_gold
    from tiny import save_tiny

    folder = save_tiny(tmp_path / "bert", "bert")
    before = load_file(folder / "model.safetensors")
    pairs = [
        Pair(
            f"p{i}",
            (Turn("user", f"question {i}"),),
            f"a long helpful answer {i}",
            f"no {i}",
            "t",
            "t",
            i + 1,
        )
        for i in range(16)
    ]
    cfg = GoldConfig(
        backbone=str(folder), trainable="top:1", pairs=16, steps=3, batch=4, max_length=32, lr=1e-2
    )
    build_gold(cfg, pairs, tmp_path / "gold", None)
    after = load_file(tmp_path / "gold" / "member0" / "model.safetensors")
    moved = {k for k in after if k in before and not torch.equal(after[k], before[k])}
    assert moved and all(
        k.startswith(("bert.encoder.layer.1.", "bert.pooler.", "classifier.", "score.")) for k in moved
    ), moved
    assert any(".layer.1." in k for k in moved)  # the top block itself trained


def test_kl_to_the_reference_is_zero_at_it_and_positive_after_a_change():
    from rmtension.loop.measure import kl_per_reply
    from rmtension.rl.rloo import snapshot

    policy = tiny_parts().new_policy()
    reference = snapshot(policy.model, [n for n, _ in policy.model.named_parameters()])
    prompts, replies = [[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14]]
    assert kl_per_reply(policy, reference, prompts, replies).tolist() == [0.0, 0.0]
    with torch.no_grad():
        next(policy.model.parameters()).add_(0.5)  # the embeddings: every position's logits move
    kl = kl_per_reply(policy, reference, prompts, replies)
    assert (kl > 0).all()
    assert kl_per_reply(policy, {}, prompts, replies).shape == (
        2,
    )  # no reference given: computed, not skipped


def test_a_loop_that_distills_the_top_block_moves_only_it_and_measures_the_weight_path(tmp_path):
    """`round.trainable: top:1` on a two-block policy: π_R differs from π_0 in the top block and the
    final norm only, and the weight path's midpoint has a KL between its two ends'."""
    from rmtension.policy.sampling import load_policy

    parts = tiny_parts()
    two_blocks = LoopParts(
        lambda: Policy(tiny_causal_lm("llama", layers=2), tiny_tokenizer(), [1], 0, "tiny"),
        *[getattr(parts, f) for f in ("new_pm", "pm_tokenizer", "gold", "d0", "prompts", "probes")],
    )
    cfg = {
        **CONFIG,
        "seeds": [0],
        "rounds": 2,
        "heldout_between": 2,  # round 1 measures the first 2 of the 4 held-out prompts
        "weight_path": [0.0, 0.5, 1.0],
        "weight_path_arms": ["online"],
        "arms": {"online": {}, "offline": {"pm": "offline"}},
        "round": {**CONFIG["round"], "trainable": "top:1", "distill_lr": 1e-2},
        "placebo": None,
    }
    run_loop(tmp_path, LoopConfig.model_validate(cfg), two_blocks)
    seed_dir = tmp_path / "loop" / "arms" / "online" / "seed0"
    start = dict(two_blocks.new_policy().model.named_parameters())
    moved = {
        n
        for n, p in load_policy(str(seed_dir / "round2" / "policy"), precision="fp32").named_parameters()
        if not torch.equal(p, start[n])
    }
    assert moved and all(n.startswith("model.layers.1.") or n == "model.norm.weight" for n in moved), moved
    path = json.loads((seed_dir / "weight_path.json").read_text())
    kl = [float(np.mean(row["kl"])) for row in path]
    assert kl[0] == 0.0 < kl[1] < kl[2]
    assert not (tmp_path / "loop" / "arms" / "offline" / "seed0" / "weight_path.json").exists()
    held = [len(json.loads((seed_dir / f"round{r}" / "measure.json").read_text())["gold"]) for r in (1, 2)]
    assert held == [2, len(parts.probes.heldout)]


def test_a_kept_policy_hands_back_pi0s_draw_and_draws_afresh_once_its_weights_move():
    from rmtension.loop.kept import KeptPolicy
    from rmtension.rl.rloo import snapshot

    plain = tiny_parts().new_policy()
    reference = snapshot(plain.model, [n for n, _ in plain.model.named_parameters()])
    kept: dict = {}
    policy = KeptPolicy.of(plain, reference, kept)
    prompts = [[5, 6, 7], [8, 9]]
    first = policy.draw(prompts, n=3, max_new_tokens=6, temperature=1.0, seed=4)
    assert len(kept) == 1
    want = Policy.draw(plain, prompts, n=3, max_new_tokens=6, temperature=1.0, seed=4)
    assert first.tokens == want.tokens and (first.finished == want.finished).all()
    first.tokens[0].append(99)  # a caller's change does not reach the kept draw
    again = KeptPolicy.of(tiny_parts().new_policy(), reference, kept)  # the next arm's π_0
    assert again.draw(prompts, n=3, max_new_tokens=6, temperature=1.0, seed=4).tokens == want.tokens
    assert len(kept) == 1  # the same call: nothing new kept
    with torch.no_grad():
        next(again.model.parameters()).add_(0.5)  # no longer π_0
    moved = again.draw(prompts, n=3, max_new_tokens=6, temperature=1.0, seed=4)
    assert len(kept) == 1 and moved.tokens == Policy.draw(again, prompts, 3, 6, 1.0, 4).tokens
    assert moved.tokens != want.tokens


def test_kept_gold_scores_a_repeated_call_once():
    from rmtension.loop.kept import kept_gold

    calls = []

    def counted(contexts, replies):
        calls.append(len(replies))
        return gold(contexts, replies)

    kept: dict = {}
    score = kept_gold(counted, kept)
    ctx, replies = [ask(1), ask(2)], ["abc", "zzz a"]
    first = score(ctx, replies)
    np.testing.assert_array_equal(first, gold(ctx, replies))
    first[0] = 7.0  # a caller's change does not reach the kept scores
    np.testing.assert_array_equal(score(ctx, replies), gold(ctx, replies))
    score(ctx, replies[::-1])  # another call (another order): scored
    assert calls == [2, 2]


def test_arms_sharing_pi0s_work_write_the_files_each_arm_writes_alone(tmp_path):
    """run_loop keeps π_0's draws and the gold's calls across arms; running each arm alone, with
    nothing kept, gives the same files bit for bit."""
    from rmtension.loop.study import run_arm_seed

    cfg = LoopConfig.model_validate(
        {
            **CONFIG,
            "seeds": [1],
            "arms": {k: CONFIG["arms"][k] for k in ("online", "length")},
            "placebo": None,
        }
    )
    run_loop(tmp_path / "shared", cfg, tiny_parts())
    alone = tmp_path / "alone" / "loop"
    for arm in cfg.arms:
        run_arm_seed(alone, cfg, arm, 1, tiny_parts(), cfg.reviewer_of(arm))
    keep = ("measure.json", "labels.json", "weight_path.json", "pairs.json", "improve.json")
    shared = {k: v for k, v in loop_files(tmp_path / "shared").items() if k.endswith(keep)}
    assert shared and shared == loop_files(tmp_path / "alone")


def test_headroom_of_a_shortcut_measure_on_hand_worked_replies():
    """Words: no reply passes the longest cut reply (the bound); the typical room lets only replies
    that ended early grow, to the cut replies' mean."""
    from rmtension.loop.results import headroom

    seed0 = {"words": [10.0, 20.0], "finished": [1.0, 0.0], "refuses": [1.0, 0.0], "hedges": [0.0, 0.0]}
    seed1 = {"words": [24.0, 4.0], "finished": [0.0, 1.0], "refuses": [0.0, 0.0], "hedges": [1.0, 0.0]}
    room = headroom("length", 1.0, [seed0, seed1])  # cut: 20 and 24 words
    assert room.bound == pytest.approx((14 + 4 + 0 + 20) / 4) and "50%" in room.why
    assert room.typical == pytest.approx((12 + 0 + 0 + 18) / 4)  # to the cut mean of 22, finished only
    assert headroom("length", -1.0, [seed0, seed1]).bound == pytest.approx(14.5)  # shrinking: to 0
    assert headroom("refusal", 1.0, [seed0, seed1]).bound == pytest.approx(0.75)
    assert headroom("confidence", -1.0, [seed0, seed1]).bound == pytest.approx(0.25)  # hedging can fall 0.25
    old = {k: v for k, v in seed0.items() if k != "finished"}  # written before the flags were kept
    assert headroom("length", 1.0, [old, seed1]).bound is None
    assert headroom("length", 1.0, [{**seed0, "finished": [1.0, 1.0]}]).bound is None  # nothing at the cap


def test_a_shortcut_claim_without_room_for_its_margin_is_not_testable(whole):
    """The same files read with a margin above the length arm's headroom bound: "not testable here";
    with a margin below it: the equivalence rule's verdict stands."""
    from rmtension.loop.results import headroom, loop_findings, round_folders
    from rmtension.stats.verdicts import NOT_TESTABLE

    cfg = LoopConfig.model_validate(CONFIG)
    last = [
        json.loads((round_folders(whole / "loop", cfg, "online", s)[-1] / "measure.json").read_text())
        for s in cfg.seeds
    ]
    words = np.concatenate([m["words"] for m in last])
    cut = ~np.concatenate([m["finished"] for m in last]).astype(bool)
    assert cut.any()  # 5-token replies: some reach the cap
    bound = np.maximum(words[cut].max() - words, 0.0).mean()
    assert headroom("length", 1.0, last).bound == pytest.approx(bound)

    def length_claim(margin: float) -> dict:
        claims = {**CONFIG["claims"], "shortcut_steers_policy": {"length": margin}}
        fs = loop_findings(whole / "loop", LoopConfig.model_validate({**CONFIG, "claims": claims}))
        return next(f for f in fs if f.id == "shortcut_steers_policy:length")

    wide = length_claim(bound + 100.0)  # the CI lies well inside it: "not supported" without the rule
    assert wide.verdict == NOT_TESTABLE and "at most is possible" in wide.evidence
    assert wide.numbers["headroom"] == pytest.approx(bound)
    if bound > 0:
        assert length_claim(bound / 2).verdict != NOT_TESTABLE


def test_a_shortcut_that_changed_no_label_is_not_testable(tmp_path, whole):
    """A refusal arm whose shortcut changed no label (the tiny policy never refuses) says nothing about
    the shortcut: "not testable here", not "not supported". Its files here are the online arm's. With
    one changed label counted, the equivalence rule's verdict stands. Files written before labels.json
    counted the changes: the arm counts as the baseline only when every label equals the baseline's and
    the arm differs from it in its reviewer alone. The placebo is never asked."""
    from rmtension.loop.results import loop_findings, round_folders
    from rmtension.stats.verdicts import NOT_SUPPORTED, NOT_TESTABLE

    claims = {**CONFIG["claims"], "shortcut_steers_policy": {"length": 1.0, "refusal": 0.05}}

    def refusal_run(arm: dict):
        cfg = LoopConfig.model_validate(
            {**CONFIG, "arms": {**CONFIG["arms"], "refusal": arm}, "claims": claims}
        )
        run = tmp_path / f"loop{len(list(tmp_path.iterdir()))}"
        shutil.copytree(whole / "loop", run)
        for s in cfg.seeds:  # the refusal arm's files: the online arm's
            for src, dst in zip(round_folders(run, cfg, "online", s), round_folders(run, cfg, "refusal", s)):
                shutil.copytree(src, dst)
        return run, cfg

    def claim(run, cfg, arm="refusal"):
        return next(f for f in loop_findings(run, cfg) if f.id == f"shortcut_steers_policy:{arm}")

    def edit_labels(run, cfg, change, folders=slice(None)):
        for s in cfg.seeds:
            for folder in round_folders(run, cfg, "refusal", s)[folders]:
                labels = json.loads((folder / "labels.json").read_text())
                change(labels)
                (folder / "labels.json").write_text(json.dumps(labels))

    refusal = {"shortcuts": [{"kind": "refusal", "weight": 1.0}]}
    run, cfg = refusal_run(refusal)
    idle = claim(run, cfg)
    assert idle.verdict == NOT_TESTABLE and "changed none of the reviewer's labels" in idle.evidence
    replies = [
        json.loads((f / "pairs.json").read_text())
        for s in cfg.seeds
        for f in round_folders(run, cfg, "refusal", s)[1:]
    ]
    assert idle.numbers["labelled_pairs"] == sum(len(p["a"]) for p in replies)
    assert (
        idle.numbers["feature_pairs"] == 0 and idle.numbers["labels_changed"] == 0
    )  # random tokens never refuse
    placebo = claim(run, cfg, "placebo")  # weight 0: it changes no label either, and is decided as measured
    assert placebo.numbers["labels_changed"] == 0 and "changed none" not in placebo.evidence

    edit_labels(run, cfg, lambda d: d.update(shortcut_changed=1), slice(2, 3))  # one changed label per seed
    acted = claim(run, cfg)  # the measures are still the baseline's: a drift of 0, inside the margin
    assert acted.verdict == NOT_SUPPORTED and acted.numbers["labels_changed"] == 2

    edit_labels(run, cfg, lambda d: d.pop("shortcut_changed"))  # files from before the count
    same = claim(run, cfg)
    assert same.verdict == NOT_TESTABLE and "is `online` itself" in same.evidence
    assert same.numbers["labels_changed"] is None
    edit_labels(run, cfg, lambda d: d["a_preferred"].__setitem__(0, not d["a_preferred"][0]), slice(1, 2))
    assert claim(run, cfg).verdict == NOT_SUPPORTED  # a label of its own: the arm is not the baseline

    run, cfg = refusal_run({**refusal, "pm": "offline"})  # equal labels, but another PM: not the baseline
    edit_labels(run, cfg, lambda d: d.pop("shortcut_changed"))
    assert claim(run, cfg).verdict != NOT_TESTABLE


def test_arms_are_described_against_the_baseline_paired_by_seed_and_prompt(whole):
    """loop.json's `minus_baseline`: an arm's last-round gold, gap and KL minus the baseline's, paired.
    The offline arm's gold difference is `online_beats_offline` with the sign turned."""
    loop = json.loads((whole / "loop" / "loop.json").read_text())
    assert "minus_baseline" not in loop["arms"]["online"]
    fs = {f["id"]: f for f in json.loads((whole / "loop" / "findings.json").read_text())["findings"]}
    claim = fs["online_beats_offline"]
    gold = loop["arms"]["offline"]["minus_baseline"]["gold"]
    assert gold["mean"] == pytest.approx(-claim["effect"]["online_beats_offline"], abs=1e-12)
    lo, hi = claim["ci95"]["online_beats_offline"]
    assert gold["ci95"] == pytest.approx([-hi, -lo], abs=1e-12)
    for arm in ("offline", "length", "ensemble"):
        kl = loop["arms"][arm]["minus_baseline"]["kl"]["mean"]
        by_round = (
            loop["arms"][arm]["rounds"][-1]["kl"]["mean"] - loop["arms"]["online"]["rounds"][-1]["kl"]["mean"]
        )
        assert kl == pytest.approx(by_round, abs=1e-9)  # a mean of differences is the difference of means


def test_loop_report_rewrites_the_results_from_the_rounds_files(tmp_path, whole, capsys):
    """`loop report` recomputes rounds.csv, loop.json and findings.json from the rounds' files (a
    results rule changed after a run applies without rerunning it): the same bytes as the run wrote;
    a folder without a finished loop is refused in one line."""
    from rmtension.cli import main

    shutil.copytree(whole / "loop", tmp_path / "loop")
    written = {n: (whole / "loop" / n).read_bytes() for n in ("rounds.csv", "loop.json", "findings.json")}
    for name in written:
        (tmp_path / "loop" / name).write_text("stale")
    (tmp_path / "loop" / "rounds.csv").write_bytes(written["rounds.csv"])  # what marks a finished loop
    assert main(["loop", "report", str(tmp_path)]) == 0
    assert {n: (tmp_path / "loop" / n).read_bytes() for n in written} == written
    capsys.readouterr()
    assert main(["loop", "report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished loop here" in err and "Traceback" not in err
    pairs = tmp_path / "loop" / "arms" / "length" / "seed0" / "round1" / "pairs.json"
    pairs.write_text("{")  # a round's file cut short, read last (by the length claim)
    before = {n: (tmp_path / "loop" / n).read_bytes() for n in written}
    (tmp_path / "loop" / "rounds.csv").write_text("stale")  # nothing is written when a file cannot be read
    assert main(["loop", "report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot rewrite the results" in err and "Traceback" not in err
    assert (tmp_path / "loop" / "rounds.csv").read_text() == "stale"
    assert {n: (tmp_path / "loop" / n).read_bytes() for n in ("loop.json", "findings.json")} == {
        n: before[n] for n in ("loop.json", "findings.json")
    }


def test_seeds_run_apart_write_the_files_of_one_run(tmp_path, whole):
    """`loop run --workers`: each worker runs its seeds (`run_loop(seeds=...)`), the parent writes the
    results; the files equal a one-process run's."""
    from rmtension.loop.results import write_results

    cfg = LoopConfig.model_validate(CONFIG)
    for seed in cfg.seeds:
        run_loop(tmp_path, cfg, tiny_parts(), seeds=[seed])
        assert not (tmp_path / "loop" / "rounds.csv").exists()  # a worker writes no results
    write_results(tmp_path / "loop", cfg)
    assert loop_files(tmp_path) == loop_files(whole)


def test_a_failing_worker_is_one_line_naming_it_and_stops_the_others(tmp_path):
    import sys
    import time

    from rmtension.errors import RmtensionError
    from rmtension.loop.workers import parse_part, run_commands, run_workers, worker_command

    assert worker_command(["--out", "x"], 1, 2)[-6:] == ["loop", "run", "--out", "x", "--part", "1/2"]
    assert parse_part("1/2", 2) == (1, 2)
    for bad_part in ("2/2", "1/3", "x"):
        with pytest.raises(RmtensionError, match="--part"):
            parse_part(bad_part, 2)
    t0 = time.perf_counter()
    fail, slow = (
        [sys.executable, "-c", "raise SystemExit(3)"],
        [sys.executable, "-c", "import time; time.sleep(60)"],
    )
    with pytest.raises(
        RmtensionError,
        match=r"^worker 1/2 exited with 3; worker 2/2 stopped \(errors above\); rerun the same command",
    ):
        run_commands([fail, slow], poll_s=0.1)
    assert time.perf_counter() - t0 < 30  # the sleeping worker was stopped, not waited for
    run_commands([[sys.executable, "-c", "pass"]] * 2)  # both succeed: no error
    missing = ["--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")]
    with pytest.raises(
        RmtensionError, match=r"^worker \d/2 exited with 2.*\(errors above\)$"
    ):  # a real worker's bad config
        run_workers(missing, 2)
