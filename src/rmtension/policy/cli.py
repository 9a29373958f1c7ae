"""`rmtension policy sample`, `rmtension bon` and `rmtension rl`.

`bon` and `rl` run the study's own stage list (`rmtension.study.run_study`), filtered to what they
need (data, the study RMs, the PM halves), and reuse every stage already complete there, so after
`rmtension study` they only run themselves. A section missing from the config is taken at its defaults.

Imports inside functions: the CLI answers --help and a bad argument in under a second.
"""

from __future__ import annotations

import json
import sys

import typer

from rmtension.errors import ConfigError
from rmtension.study import run_study

app = typer.Typer(no_args_is_help=True, add_completion=False)  # unnamed: its commands join the root
policy_app = typer.Typer(help="Sample from the policy that best-of-n and RL optimise.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")

CONFIG = typer.Option("configs/default.yaml", "--config", "-c", help="Study config (YAML).")
OUT = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<name>).")
OVERRIDES = typer.Argument(None, help="key=value overrides, e.g. bon.n_samples=16 policy.max_new_tokens=32")


def _config(config: str, overrides: list[str] | None, sections: tuple[str, ...]):
    """The study config with each of `sections` present (defaults where the YAML leaves it out)."""
    from rmtension.config import load_config

    return load_config(config, overrides or [], present=sections)


@app.command("bon")
def bon_command(config: str = CONFIG, out: str = OUT, overrides: list[str] = OVERRIDES) -> None:
    """Best-of-n: PM halves, N samples per held-out prompt, every judge's scores, curves, fits, frontier."""
    from rmtension.run.log import log

    cfg = _config(config, overrides, ("policy", "pm_halves", "bon"))
    run_dir = run_study(cfg, out, only=("train", "pm_halves", "bon"))
    fits = json.loads((run_dir / "bon_fit.json").read_text())["objectives"]
    for o, f in fits.items():
        held, gap = f["curves"][f["heldout_curve"]], f["gap"]
        fit, ci = held["forms"]["sqrt_kl"], f["slope_ci"][f["heldout_curve"]]
        log(
            f"{o}: pm_test of pm_train's pick ≈ {fit['intercept']:+.3f} {fit['slope']:+.3f}·sqrt(KL) "
            f"[{ci[0]:+.3f}, {ci[1]:+.3f}], best form {held['best']} (ΔAIC {held['delta_aic']:.1f}); "
            f"gap at n={gap['n'][-1]}: {gap['gap'][-1]:+.3f}, beyond regression to the mean "
            f"{gap['excess'][-1]:+.3f} [{gap['excess_ci_low'][-1]:+.3f}, {gap['excess_ci_high'][-1]:+.3f}]"
        )
    log(f"outputs: {run_dir / 'bon.csv'}, {run_dir / 'bon_fit.json'}, {run_dir / 'frontier.csv'}")


@app.command("rl")
def rl_command(config: str = CONFIG, out: str = OUT, overrides: list[str] = OVERRIDES) -> None:
    """RLOO against pm_train with a KL penalty, per seed; held-out evaluations (rl_eval.csv), trend and gap (rl.json)."""
    from rmtension.run.log import log

    cfg = _config(config, overrides, ("policy", "pm_halves", "rl"))
    run_dir = run_study(cfg, out, only=("train", "pm_halves", "bon", "rl"))
    for o, sm in json.loads((run_dir / "rl.json").read_text()).items():
        ci, g = sm["trend_ci95"], sm["gap"]
        log(
            f"{o}: held-out pm_train trend {sm['trend']:+.3f} per sqrt(KL) [{ci[0]:+.3f}, {ci[1]:+.3f}] "
            f"({len(sm['seeds'])} seed(s)), final KL {sm['final_kl']:.3f}, train − test gain {g['gap']:+.3f}, "
            f"beyond regression to the mean {g['excess']:+.3f} [{g['excess_ci_low']:+.3f}, {g['excess_ci_high']:+.3f}]"
        )
    log(f"outputs: {run_dir / 'rl.csv'}, {run_dir / 'rl_eval.csv'}, {run_dir / 'rl.json'}")


@policy_app.command("sample")
def policy_sample(
    config: str = CONFIG,
    prompt: list[str] = typer.Option(
        None,
        "--prompt",
        "-p",
        help="A user message to answer (repeatable). "
        "Without it, held-out HH prompts are drawn from the config's data.",
    ),
    n_prompts: int = typer.Option(
        3, "--n-prompts", min=1, help="Held-out prompts to draw when no --prompt is given."
    ),
    n: int = typer.Option(2, "--n", min=1, help="Responses per prompt."),
    out: str = typer.Option(None, "--out", "-o", help="Write JSONL here instead of printing."),
    overrides: list[str] = OVERRIDES,
) -> None:
    """Sample responses from the policy (`policy:` section) with its chat template and stop at end-of-turn."""
    from rmtension.policy.prompts import select_prompts
    from rmtension.data.types import Turn
    from rmtension.policy.sampling import build_prompt_ids, decode_responses, open_policy
    from rmtension.run.runio import atomic_write_text

    cfg = _config(config, overrides, ("policy",))
    pc = cfg.policy
    if prompt:
        if any(not p.strip() for p in prompt):
            raise ConfigError("--prompt: an empty message cannot be answered")
        prompts = [
            {"prompt_id": f"cli/{i}", "objective": None, "context": (Turn("user", p),)}
            for i, p in enumerate(prompt)
        ]
    else:
        from rmtension.config import resolve_data_path
        from rmtension.data import build_dataset

        bundle = build_dataset(cfg.data, resolve_data_path(cfg.data))
        prompts = select_prompts(bundle.test_sets, ["helpful", "harmless"], n_prompts, pc.seed)
    policy = open_policy(pc, cfg.model.cache_dir)
    ids = [build_prompt_ids(policy.tokenizer, p["context"], pc.max_prompt_tokens) for p in prompts]
    drawn = policy.sample(ids, pc, n, pc.seed)
    texts = decode_responses(policy.tokenizer, drawn.tokens)
    rows = [
        {
            "prompt_id": prompts[p]["prompt_id"],
            "sample": int(j),
            "prompt": prompts[p]["context"][-1].content,
            "response": t,
            "finished": bool(f),
        }
        for p, j, t, f in zip(drawn.prompt_index, drawn.sample_index, texts, drawn.finished)
    ]
    if out:
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(out)
        return
    for r in rows:
        if r["sample"] == 0:
            sys.stdout.write(f"\n=== {r['prompt_id']}: {r['prompt'][:300]}\n")
        sys.stdout.write(
            f"--- sample {r['sample']}{'' if r['finished'] else ' (cut at max_new_tokens)'}:\n{r['response']}\n"
        )
