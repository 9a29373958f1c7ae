"""`rmtension loop run --workers 2` against one process: the loop's two costliest steps, two seeds' worth.

A unit of work is what one held-out measure of the steering loop spends most of its time on: the
policy (SmolLM2-135M-Instruct, sampling from its bf16 copy where bf16 is native, as `configs/loop.yaml`
sets `precision: bf16`) draws two replies to each of --prompts HH test prompts (32 new tokens, decode
batches of 64 rows), then the exact KL of those replies to π_0 with the top 6 blocks changed
(`rmtension.loop.measure.kl_per_reply`). Two seeds' units run

- baseline: one after the other in one process with all the machine's threads (the loop without
  --workers);
- workers: at once, in two processes with half the threads each (`--workers 2`).

Each arm runs --repeats times, alternating, and keeps its run with the least draw + KL time (process
start-up and model loading left out). A worker's time is its own draw + KL; the two workers' time is
the slower worker's. The ratios are baseline / workers for the whole unit and, beside it, per step
(the slower worker's step times).

    python benchmarks/loop_workers.py [--data PATH/hh-rlhf] [--prompts 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def unit(data: str, prompts: int, seeds: list[int]) -> dict[str, float]:
    """Draw + KL for each seed in this process; seconds per step, summed over the seeds."""
    import torch

    sys.path.insert(0, str(HERE))
    from sampling import hh_contexts

    from rmtension.loop.measure import kl_per_reply
    from rmtension.model.precision import use_bf16
    from rmtension.policy.config import PolicyConfig
    from rmtension.policy.sampling import build_prompt_ids, open_policy
    from rmtension.rl.rloo import snapshot

    policy = open_policy(
        PolicyConfig(backbone="smollm2-135m"), os.environ.get("RMTENSION_CACHE"), precision="fp32"
    )
    policy.draw_bf16 = use_bf16(True)
    reference = snapshot(policy.model, [n for n, _ in policy.model.named_parameters()])
    with torch.no_grad():  # π_r: the top 6 blocks moved, as distillation's `top:6` moves them
        for name, p in policy.model.named_parameters():
            if any(f"layers.{i}." in name for i in range(24, 30)):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 1e-3)
    contexts = hh_contexts(Path(data) / "helpful-base" / "test.jsonl.gz", prompts)
    ids = [build_prompt_ids(policy.tokenizer, c, 128) for c in contexts]
    out = {"draw": 0.0, "kl": 0.0}
    for seed in seeds:
        t = time.perf_counter()
        drawn = policy.draw(ids, n=2, max_new_tokens=32, temperature=1.0, seed=seed, batch_size=64)
        out["draw"] += time.perf_counter() - t
        t = time.perf_counter()
        kl_per_reply(
            policy, reference, [ids[p] for p in drawn.prompt_index.tolist()], drawn.tokens, policy.draw_bf16
        )
        out["kl"] += time.perf_counter() - t
    return out


def finish(proc: subprocess.Popen) -> dict[str, float]:
    """A started `run`'s times; one line and exit if it failed."""
    out = proc.communicate()[0]
    if proc.returncode != 0:
        sys.exit(f"benchmarks/loop_workers.py: a unit exited with {proc.returncode} (its error is above)")
    return json.loads(out)


def run(data: str, prompts: int, seeds: list[int], threads: int) -> subprocess.Popen:
    """`unit` started in a fresh process with `threads` threads (its JSON comes on stdout)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [
        sys.executable,
        __file__,
        "--unit",
        ",".join(map(str, seeds)),
        "--data",
        data,
        "--prompts",
        str(prompts),
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", default=os.environ.get("RMTENSION_DATA"), help="HH-RLHF folder (official layout)"
    )
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--unit", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.data:
        sys.exit("benchmarks/loop_workers.py: set --data or RMTENSION_DATA to the HH-RLHF folder")
    if args.unit:
        print(json.dumps(unit(args.data, args.prompts, [int(s) for s in args.unit.split(",")])))
        return
    from rmtension.loop.workers import usable_cores

    cores = usable_cores()
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        base = finish(run(args.data, args.prompts, [0, 1], cores))
        procs = [run(args.data, args.prompts, [seed], max(1, cores // 2)) for seed in (0, 1)]
        two = max((finish(p) for p in procs), key=lambda p: p["draw"] + p["kl"])  # both end with the slower
        for name, got in (("baseline", base), ("workers", two)):
            if name not in best or got["draw"] + got["kl"] < best[name]["draw"] + best[name]["kl"]:
                best[name] = got
    b, w = best["baseline"], best["workers"]
    print(f"{cores} cores; {args.prompts} prompts x 2 replies x 2 seeds; fastest of {args.repeats}")
    for step in ("draw", "kl"):
        print(f"{step:>5}: one process {b[step]:6.1f} s, two workers {w[step]:6.1f} s")
    print(f"ratio loop_workers_draw: {b['draw'] / w['draw']:.2f}")
    print(f"ratio loop_workers_kl: {b['kl'] / w['kl']:.2f}")
    print(f"ratio loop_workers_unit: {(b['draw'] + b['kl']) / (w['draw'] + w['kl']):.2f}")


if __name__ == "__main__":
    main()
