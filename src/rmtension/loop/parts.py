"""The real parts of the loop (`LoopParts`) from a `LoopConfig`: HH-RLHF, π_0, the PM backbone, gold.

- the objective's training split is cut in two by prompt hash (`rmtension.loop.gold.gold_share`):
  gold trains on one share; D_0 (`d0_pairs` pairs) and the rounds' prompts come from the other;
- the rounds' prompts are distinct first user turns of the proxy share not used by D_0, in a seeded
  order, `prompts_per_round` per round, so no two rounds share a prompt;
- held-out prompts are distinct prompts of the objective's test split;
- XSTest prompts (`xstest_path`): the first `xstest_prompts` safe (should-respond) and unsafe
  (should-refuse) prompts; the capability set is generated (`rmtension.loop.capability`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from rmtension.config import DataConfig
from rmtension.data.types import Pair, Turn
from rmtension.errors import RmtensionError
from rmtension.loop.capability import generate_items
from rmtension.loop.config import LoopConfig
from rmtension.loop.gold import build_gold, gold_share, pair_accuracy
from rmtension.loop.measure import Probes
from rmtension.loop.rounds import write_json
from rmtension.loop.study import LoopParts, check_prompts, claim_run_dir


def distinct_prompts(pairs: Sequence[Pair], skip: set[str] = frozenset()) -> list[tuple[Turn, ...]]:
    """Contexts ending in a user turn, one per first user turn (not in `skip`), in the pairs' order."""
    seen, out = set(skip), []
    for p in pairs:
        if p.context and p.context[-1].role == "user" and p.group_key not in seen:
            seen.add(p.group_key)
            out.append(p.context)
    return out


def xstest_prompts(path: str | None, n: int) -> tuple[list, list]:
    if not path:
        return [], []
    from rmtension.data.xstest import is_unsafe, load_xstest

    prompts = load_xstest(path).prompts
    safe = [(Turn("user", t),) for t, kind in prompts.values() if not is_unsafe(kind)][:n]
    unsafe = [(Turn("user", t),) for t, kind in prompts.values() if is_unsafe(kind)][:n]
    return safe, unsafe


def build_parts(cfg: LoopConfig, out: Path, cache_dir: str | None = None) -> LoopParts:
    """Every part of the loop; the gold is trained once into out/loop/gold/ and its accuracy written to
    out/loop/gold.json."""
    from rmtension.data import build_dataset
    from rmtension.data.splits import seeded_order, take
    from rmtension.model.backbones import load_reward_model, load_tokenizer, resolve_backbone
    from rmtension.model.scope import set_trainable
    from rmtension.policy.config import PolicyConfig
    from rmtension.model.precision import use_bf16
    from rmtension.policy.sampling import open_policy

    claim_run_dir(Path(out) / "loop", cfg)  # before anything trains into it (run_loop checks again)
    root = cfg.data_path or os.environ.get("RMTENSION_DATA")
    if not root:
        raise RmtensionError("the loop needs HH-RLHF in the official layout: set RMTENSION_DATA or data_path")
    bundle = build_dataset(DataConfig(path=root), root)
    train, test = bundle.splits[cfg.objective]["train"], bundle.test_sets[cfg.objective]
    gold_pairs, proxy_pairs = gold_share(train)
    d0 = take(proxy_pairs, cfg.d0_pairs, 0, "loop-d0")
    prompts = distinct_prompts(seeded_order(proxy_pairs, 0, "loop-prompts"), {p.group_key for p in d0})
    check_prompts(cfg, len(prompts))  # before the gold trains
    loop = Path(out) / "loop"
    bf16 = cfg.precision == "bf16"
    gold = build_gold(cfg.gold, gold_pairs, loop / "gold", cache_dir, bf16)
    if not (loop / "gold.json").exists():
        test_pairs = take(test, cfg.gold.test_pairs, 0, "loop-gold-test")
        write_json(
            loop / "gold.json",
            {
                "test": pair_accuracy(gold, test_pairs, cfg.bootstrap),
                "gold_pairs": len(gold_pairs),
                "proxy_pairs": len(proxy_pairs),
            },
        )
    respond, refuse = xstest_prompts(cfg.xstest_path, cfg.xstest_prompts)
    probes = Probes(
        distinct_prompts(test)[: cfg.heldout_prompts],
        generate_items(cfg.capability_items, cfg.capability_seed),
        respond,
        refuse,
        cfg.round.max_new_tokens,
        cfg.round.max_prompt_tokens,
        cfg.round.draw_rows,
    )
    pm_path = resolve_backbone(cfg.pm.backbone, cache_dir)
    pm_tok = load_tokenizer(pm_path, cfg.pm.max_length)

    def new_pm():
        torch.manual_seed(0)  # the fresh score head is the same every call
        pm = load_reward_model(pm_path, pm_tok).eval()
        set_trainable(pm, cfg.pm.trainable)
        return pm

    def new_policy():
        policy = open_policy(PolicyConfig(backbone=cfg.policy), cache_dir, precision="fp32")
        policy.draw_bf16 = use_bf16(bf16)  # samples from a bf16 copy where native; trains in fp32
        return policy

    return LoopParts(
        new_policy,
        new_pm,
        pm_tok,
        gold,
        [(p.context, p.chosen, p.rejected) for p in d0],
        prompts[: cfg.rounds * cfg.prompts_per_round],
        probes,
    )
