"""Attribution patching (`rmtension.judges.attribution`) against exact ablation (`run_conditions`).

On one reward model and one set of HH-RLHF test pairs, both compute the mean margin change over pairs of:

- single neurons: `--per-layer` random neurons of every block, zero and mean ablation;
- sets: the five mean_act sets at top `--p`% over all blocks and their random controls (the conditions of
  `benchmarks/ablation.py --layers all`), zero and mean ablation.

Prints, per group, the Spearman and Pearson correlation of estimated and exact effects, the median
absolute error relative to the median absolute exact effect, how often the signs agree, and the exact
effects' size in SD of the clean margins (the estimate is only worth validating where ablation moves the
margin); then the time of both and `ratio estimate_vs_exact: <x>` (exact seconds over estimate seconds,
same conditions). The model: `--model` (an RM folder, or a backbone name loaded as an RM with a seeded
score head, as `benchmarks/ablation.py` does).

    .venv/bin/python benchmarks/attribution.py [--pairs 8] [--per-layer 4] [--draws 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import MODELS, build, default_data, load_hh  # noqa: E402

from rmtension.judges.ablate import Condition, run_conditions  # noqa: E402
from rmtension.judges.attribution import estimate_conditions  # noqa: E402
from rmtension.judges.hooks import neuron_shape  # noqa: E402
from rmtension.model.backbones import load_reward_model, load_tokenizer, resolve_backbone  # noqa: E402
from rmtension.model.encode import encode_pairs  # noqa: E402


def single_neurons(shape: tuple[int, int], per_layer: int, values: torch.Tensor, seed: int) -> dict:
    """`per_layer` random neurons of every block, each alone, zero and mean ablation."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for layer in range(shape[0]):
        for n in torch.randperm(shape[1], generator=g)[:per_layer].tolist():
            mask = torch.zeros(shape, dtype=torch.bool)
            mask[layer, n] = True
            out[f"zero|L{layer}n{n}"] = Condition(mask)
            out[f"mean|L{layer}n{n}"] = Condition(mask, values)
    return out


def both_modes(conds: dict[str, Condition]) -> dict[str, Condition]:
    """Each set condition in mean mode (as built) and in zero mode."""
    out = {f"mean|{k}": c for k, c in conds.items()}
    out.update({f"zero|{k}": Condition(c.mask) for k, c in conds.items()})
    return out


def compare(name: str, keys: list[str], exact: dict, est: dict, clean: np.ndarray) -> None:
    x = np.array([exact[k].mean() - clean.mean() for k in keys])
    y = np.array([est[k].mean() - clean.mean() for k in keys])
    sd = clean.std()
    rho = stats.spearmanr(x, y).statistic
    r = stats.pearsonr(x, y).statistic
    rel = np.median(np.abs(y - x)) / np.median(np.abs(x))
    sign = float(np.mean(np.sign(x) == np.sign(y)))
    print(
        f"{name}: {len(keys)} conditions, spearman {rho:.3f}, pearson {r:.3f}, "
        f"median |est - exact| / median |exact| {rel:.2f}, signs agree {sign:.2f}, "
        f"|exact| median {np.median(np.abs(x)) / sd:.3f} SD, max {np.abs(x).max() / sd:.3f} SD"
    )


def tiny_setting(args) -> tuple:
    """A tiny random reward model (tests/tiny.py), random token pairs, and random sets in every block
    (zero and mean mode, the mean being each neuron's mean activation over the pairs' tokens)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny import tiny_reward_model

    from rmtension.judges.hooks import capture
    from rmtension.model.encode import EncodedPairs, collate_pairs

    model = tiny_reward_model(args.tiny, layers=4)
    g = torch.Generator().manual_seed(1)
    n = 2 * args.pairs
    seq = lambda: torch.randint(4, 260, (int(torch.randint(8, 40, (1,), generator=g)),), generator=g).tolist()  # noqa: E731
    enc = EncodedPairs(
        [f"p{i}" for i in range(n)], [seq() for _ in range(n)], [seq() for _ in range(n)], 0, 0
    )
    batch = collate_pairs(enc, list(range(n)), 0)
    with torch.no_grad(), capture(model) as acts:
        model(**batch)
    m = batch["attention_mask"].unsqueeze(-1).float()
    shape = neuron_shape(model)
    values = torch.stack([(acts[f"layers.{i}.mlp.act"] * m).sum((0, 1)) / m.sum() for i in range(shape[0])])
    sets = {}
    for d in range(5 * (1 + 2 * args.draws)):
        sets[f"random{d}"] = Condition(torch.rand(shape, generator=g) < args.p / 100, values)
    print(f"tiny {args.tiny} reward model {shape[0]} x {shape[1]} neurons, {n} random token pairs")
    return model, enc, 0, both_modes(sets)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=8, help="test pairs per objective")
    ap.add_argument("--score-pairs", type=int, default=8, help="scoring pairs per objective (mean_act)")
    ap.add_argument("--draws", type=int, default=1, help="random draws per control kind")
    ap.add_argument("--per-layer", type=int, default=4, help="single neurons per block")
    ap.add_argument("--p", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=16, help="pairs per batch (both)")
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--model", default="minilm", help="RM folder, or a backbone registry name")
    ap.add_argument("--data", type=Path, default=default_data(), help="hh-rlhf root (official layout)")
    ap.add_argument(
        "--tiny",
        choices=["bert", "llama", "gpt2", "gpt_neox"],
        help="instead: a tiny random model of this family (tests/tiny.py, 4 blocks) on random token pairs, "
        "with random sets of `--p`%% of the neurons: a model where every ablation moves the margin",
    )
    args = ap.parse_args(argv)
    args.layers, args.trainable = "all", "top:1"

    if args.tiny:
        model, enc, pad, sets = tiny_setting(args)
    else:
        path = resolve_backbone(MODELS.get(args.model, args.model))
        tok = load_tokenizer(path, args.max_length)
        torch.manual_seed(0)
        model = load_reward_model(path, tok).eval()
        enc = encode_pairs(load_hh(args.data, args.pairs), tok, args.max_length)
        pad = tok.pad_token_id
        sets = both_modes(build(model, tok, args.data, args))
    values = next(c.values for c in sets.values() if c.values is not None)  # the sets' mean values [L, N]
    singles = single_neurons(neuron_shape(model), args.per_layer, values, seed=3)
    conds = {**singles, **sets}
    print(
        f"model: {args.tiny or args.model}, {len(enc)} test pairs, {len(singles)} single-neuron and {len(sets)} set conditions"
    )

    t0 = time.process_time()
    clean, exact = run_conditions(model, enc, pad, conds, args.batch, bf16=False)
    t_exact = time.process_time() - t0
    t0 = time.process_time()
    clean_est, est = estimate_conditions(model, enc, pad, conds, args.batch)
    t_est = time.process_time() - t0
    print(f"clean margins: estimate's forward vs exact max |diff| {np.abs(clean_est - clean).max():.2e}")
    for mode in ("zero", "mean"):
        keys = [k for k in singles if k.startswith(mode)]
        compare(f"single neurons, {mode} ablation", keys, exact, est, clean)
        keys = [k for k in sets if k.startswith(mode)]
        compare(f"sets at top {args.p:g}% and controls, {mode} ablation", keys, exact, est, clean)
    print(f"exact (run_conditions): {len(conds)} conditions in {t_exact:.1f}s CPU")
    print(f"estimate (one forward and backward): {len(conds)} conditions in {t_est:.1f}s CPU")
    print(f"ratio estimate_vs_exact: {t_exact / t_est:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
