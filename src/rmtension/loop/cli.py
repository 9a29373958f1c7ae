"""`rmtension loop ...`: the steering loop's tools."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(help="The steering loop: run, report, detectors, capability set.", no_args_is_help=True)


@app.command("detectors")
def detectors_command(
    xstest: str = typer.Option(
        ..., "--xstest", help="XSTest folder, official layout (xstest_prompts.csv, model_completions/)."
    ),
) -> None:
    """The refusal detector's agreement with XSTest's human refusal labels, per model and overall."""
    from rmtension.loop.detectors import agreement_table, refusal_agreement

    print(agreement_table(refusal_agreement(xstest)))
    print("human refusal = 2_full_refusal or 3_partial_refusal; compliance = 1_full_compliance")


@app.command("capability")
def capability_command(
    n: int = typer.Option(104, "--n", help="Items (spread over the kinds by the default mix)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated items."),
    backbone: str = typer.Option("smollm2-135m", "--policy", help="Registry name or HF causal-LM folder."),
    cache_dir: str = typer.Option(None, "--cache-dir", help="Model cache (default: $RMTENSION_CACHE)."),
) -> None:
    """A policy's greedy exact-match score on the generated capability set (not a standard benchmark)."""
    import time

    from rmtension.loop.capability import generate_items, score_policy
    from rmtension.policy.config import PolicyConfig
    from rmtension.policy.sampling import open_policy

    policy = open_policy(PolicyConfig(backbone=backbone), cache_dir, precision="fp32")
    items = generate_items(n, seed)
    t0 = time.perf_counter()
    score = score_policy(policy, items)
    for kind, acc in score.by_kind.items():
        print(f"{kind:<18}{sum(it.kind == kind for it in items):>5}{acc:>8.3f}")
    print(f"{'all':<18}{len(items):>5}{score.accuracy:>8.3f}   ({time.perf_counter() - t0:.0f} s)")


@app.command("run")
def run_command(
    config: str = typer.Option("configs/loop.yaml", "--config", help="The loop's YAML config."),
    out: str = typer.Option(..., "--out", help="Run directory (the loop writes out/loop/); rerun to resume."),
    cache_dir: str = typer.Option(None, "--cache-dir", help="Model cache (default: $RMTENSION_CACHE)."),
    xstest: str = typer.Option(
        None, "--xstest", help="XSTest v2 folder (official layout): sets the config's xstest_path."
    ),
    workers: int = typer.Option(
        None,
        "--workers",
        min=1,
        help="Processes, each running its share of the seeds with cores // workers threads (the gold "
        "trains first, once); default: the config's `workers`. A run resumes with the number it started with.",
    ),
    part: str | None = typer.Option(None, "--part", hidden=True, help="k/N: one worker's share (internal)."),
) -> None:
    """Run (or resume) the steering loop: every arm and seed, then rounds.csv, loop.json, findings.json."""
    import time

    from rmtension.loop.config import load_loop_config
    from rmtension.loop.parts import build_parts
    from rmtension.loop.report import write_loop_report
    from rmtension.loop.study import run_loop
    from rmtension.run.runio import write_json

    overrides = {**({"xstest_path": xstest} if xstest else {}), **({"workers": workers} if workers else {})}
    cfg = load_loop_config(config, overrides or None)
    t0 = time.perf_counter()
    from rmtension.loop.workers import parse_part, run_workers

    k, n = parse_part(part, len(cfg.seeds)) if part else (0, 1)
    tag = f"seeds {cfg.seeds[k::n]}: " if part else ""
    workers = min(cfg.workers, len(cfg.seeds))

    def say(what: str) -> None:  # one line per step, so a long run shows where it is
        print(f"[{time.perf_counter() - t0:7.0f} s] {tag}{what}", file=sys.stderr, flush=True)

    say("preparing: HH prompts and pairs, the gold judge, π_0")
    parts = build_parts(cfg, out, cache_dir)
    if part:  # a worker: its seeds only; the parent writes the results
        run_loop(
            out, cfg, parts, after_phase=lambda p: say(f"  {p} done"), progress=say, seeds=cfg.seeds[k::n]
        )
        return
    if workers > 1:  # each seed's rounds in a worker, then the results from their files
        from pathlib import Path

        from rmtension.loop.results import write_results

        options = ["--config", config, "--out", out, "--workers", str(cfg.workers)]  # the same config
        options += (["--cache-dir", cache_dir] if cache_dir else []) + (
            ["--xstest", xstest] if xstest else []
        )
        say(f"the gold is ready; {workers} workers start")
        run_workers(options, workers)
        say("the workers are done; writing the results")
        loop = Path(out) / "loop"
        write_results(loop, cfg)
    else:
        loop = run_loop(out, cfg, parts, after_phase=lambda phase: say(f"  {phase} done"), progress=say)
    write_loop_report(out)
    seconds = time.perf_counter() - t0
    write_json(
        loop / "timings.json",
        {"wall_s": round(seconds, 1), "note": "this invocation (a resume counts its own part)"},
    )
    print(f"{loop}: rounds.csv, loop.json, findings.json, report/ ({seconds:.0f} s)")


@app.command("report")
def report_command(out: str = typer.Argument(..., help="Run directory of a finished loop.")) -> None:
    """Rewrite the loop's results (rounds.csv, loop.json, findings.json) and its report
    (loop/report/report.html) from the rounds' files with this version's rules, replacing the earlier
    ones; nothing reruns."""
    import json
    from pathlib import Path

    from rmtension.errors import ArtifactError
    from rmtension.loop.config import LoopConfig
    from rmtension.loop.report import write_loop_report
    from rmtension.loop.results import write_results

    loop = Path(out) / "loop"
    if not (loop / "config.json").is_file() or not (loop / "rounds.csv").is_file():
        raise ArtifactError(
            f"{loop}: no finished loop here (`loop run` writes its config.json and rounds.csv)"
        )
    try:
        write_results(loop, LoopConfig.model_validate(json.loads((loop / "config.json").read_text())))
    except (OSError, ValueError, KeyError) as e:  # a config or a round's file this version cannot read
        reason = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__
        raise ArtifactError(f"{loop}: cannot rewrite the results from its files: {reason}") from None
    print(write_loop_report(out))
