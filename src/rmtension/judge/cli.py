"""`rmtension judge eval|dissect`: evaluate, audit and dissect reward models the study did not train."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rmtension.errors import RmtensionError

app = typer.Typer(
    help="Evaluate, audit and dissect any sequence-classification reward model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

Rms = Annotated[
    list[str], typer.Option("--rm", help="A reward model: HF folder, hub id or backbone name (repeatable).")
]
Heads = Annotated[
    list[str] | None, typer.Option("--head", help="Head of a multi-head RM (once for all, or once per --rm).")
]
Signs = Annotated[
    list[int] | None, typer.Option("--sign", help="1, or -1 for a cost model (once for all, or per --rm).")
]
Templates = Annotated[
    list[str] | None,
    typer.Option("--template", help="hh, chat or auto (default; once for all, or per --rm)."),
]


def per_judge(values: list | None, n: int, what: str, default) -> list:
    """One value per judge: none given -> the default, one -> for all, n -> one each."""
    if not values:
        return [default] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise RmtensionError(
            f"--{what}: give it once (for every judge) or once per --rm ({n}), not {len(values)} times"
        )
    return list(values)


def load_judges(rms, heads, signs, templates, max_length: int, trust_remote_code: bool) -> list:
    from rmtension.api import load_judge

    n = len(rms)
    judges = []
    for rm, head, sign, template in zip(
        rms,
        per_judge(heads, n, "head", None),
        per_judge(signs, n, "sign", 1),
        per_judge(templates, n, "template", "auto"),
    ):
        judge = load_judge(
            rm,
            head=head,
            sign=sign,
            template=template,
            max_length=max_length,
            trust_remote_code=trust_remote_code,
        )
        taken = {j.name for j in judges}
        if judge.name in taken:  # two folders with the same name: number them
            judge.name = f"{judge.name}-{len(judges) + 1}"
        judges.append(judge)
    return judges


def data_config(config: str | None, data: str | None):
    """The data settings the hh sets are carved with: a study config's, else the defaults; `--data` sets the root."""
    from rmtension.config import DataConfig, load_config

    cfg = load_config(config, []).data if config else DataConfig()
    return cfg.model_copy(update={"path": data}) if data else cfg


@app.command("eval")
def eval_command(
    rm: Rms,
    test: Annotated[
        str,
        typer.Option(
            "--test",
            help="Comma-separated: hh:helpful, hh:helpful:all, hh:harmless, xstest:DIR, rmb:PATH, suite:FILE.",
        ),
    ],
    head: Heads = None,
    sign: Signs = None,
    template: Templates = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder.")] = "runs/judges",
    config: Annotated[
        str | None,
        typer.Option("--config", help="Study config whose data settings carve hh:* (default: the defaults)."),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="HH-RLHF folder (default: $RMTENSION_DATA).")
    ] = None,
    max_length: Annotated[
        int, typer.Option("--max-length", help="Tokens per sequence (left-truncated).")
    ] = 512,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples.")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Run the model repository's own code.")
    ] = False,
) -> None:
    """Evaluate judges on test sets: OUT/<judge>/results.json, per-pair CSVs, and OUT/report.html comparing them."""
    from rmtension.api import evaluate, load_test_set, save_results
    from rmtension.judge.report import write_judge_report
    from rmtension.run.log import log

    dcfg = data_config(config, data)
    sets = [
        load_test_set(t.strip(), dcfg) for t in test.split(",") if t.strip()
    ]  # bad names fail before any model loads
    if not sets:
        raise RmtensionError("--test: no test set given")
    judges = load_judges(rm, head, sign, template, max_length, trust_remote_code)
    folders = []
    for judge in judges:
        evaluations = []
        for ts in sets:
            ev = evaluate(judge, ts, bootstrap=bootstrap, batch_size=batch_size)
            log(
                f"{judge.name} on {ts.name}: accuracy {ev.accuracy:.3f} [{ev.ci95[0]:.3f}, {ev.ci95[1]:.3f}] ({ev.n} pairs)"
            )
            evaluations.append(ev)
        folder = Path(out) / judge.name
        save_results(folder, judge, evaluations)
        folders.append(folder)
    print(write_judge_report(out, folders))


@app.command("dissect")
def dissect_command(
    rm: Rms,
    pairs: Annotated[
        str,
        typer.Option(
            "--pairs",
            help="Two comma-separated test sets: judge A's objective's pairs, then B's (e.g. hh:helpful,hh:harmless).",
        ),
    ],
    base: Annotated[
        str | None, typer.Option("--base", help="The judges' base backbone (rms_change, jaccard_base).")
    ] = None,
    head: Heads = None,
    sign: Signs = None,
    out: Annotated[
        str, typer.Option("--out", "-o", help="Run directory for the dissection.")
    ] = "runs/dissect",
    config: Annotated[
        str | None, typer.Option("--config", help="Study config whose data settings carve hh:*.")
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="HH-RLHF folder (default: $RMTENSION_DATA).")
    ] = None,
    max_length: Annotated[int, typer.Option("--max-length")] = 256,
    max_pairs: Annotated[int, typer.Option("--max-pairs", help="Scoring pairs per objective.")] = 128,
    ps: Annotated[
        str, typer.Option("--ps", help="Top-p percentages of the neuron sets, comma-separated.")
    ] = "1,5,20",
    random_draws: Annotated[
        int, typer.Option("--random-draws", help="Matched random draws per ablated set.")
    ] = 5,
    max_test_pairs: Annotated[
        int, typer.Option("--max-test-pairs", help="Ablation test pairs per objective.")
    ] = 64,
    modes: Annotated[
        str, typer.Option("--modes", help="Ablation modes, comma-separated: mean, zero.")
    ] = "mean,zero",
    controls: Annotated[
        str, typer.Option("--controls", help="Random-draw controls, comma-separated: layer, magnitude.")
    ] = "layer,magnitude",
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code")] = False,
) -> None:
    """Neuron scores, sets and overlap (with the permutation null) and ablations against matched random draws
    with cross-effects, for judge A (as the helpful RM) and judge B (as the harmless RM): the study's files."""
    from rmtension.api import load_judge, load_test_set
    from rmtension.judge.dissect import dissect
    from rmtension.neurons.config import AblationConfig, NeuronsConfig

    if len(rm) != 2:
        raise RmtensionError(f"dissect takes two judges (--rm A --rm B), got {len(rm)}")
    dcfg = data_config(config, data)
    sets = [load_test_set(t.strip(), dcfg) for t in pairs.split(",") if t.strip()]
    if len(sets) != 2:
        raise RmtensionError(
            "--pairs: two test sets, judge A's objective's and judge B's (e.g. hh:helpful,hh:harmless)"
        )
    judges = load_judges(rm, head, sign, ["hh"], max_length, trust_remote_code)
    base_judge = None if base is None else load_judge(base, template="hh", max_length=max_length, name="base")
    scorers = ["mean_act", "fire_rate", "attribution", "contrast"] + (["rms_change"] if base else [])
    try:
        neurons = NeuronsConfig(
            rms=["helpful", "harmless"], primary_rm="helpful", layers="all", scorers=scorers, max_pairs=max_pairs,
            ps=[float(p) for p in ps.split(",")], bf16=False,
        )  # fmt: skip
    except ValueError as e:
        raise RmtensionError(f"--ps: {str(e).splitlines()[-1]}") from None
    try:
        ablation = AblationConfig(
            rms=["helpful", "harmless"],
            random_draws=random_draws,
            zero_draws=1,
            max_test_pairs=max_test_pairs,
            modes=modes.split(","),
            controls=controls.split(","),
            bf16=False,
        )
    except ValueError as e:
        raise RmtensionError(f"--modes/--controls: {str(e).splitlines()[-1]}") from None
    print(dissect(Path(out), judges, base_judge, sets, neurons, ablation, max_length))


def mount(root: typer.Typer) -> None:
    """Add `judge eval|dissect` to the `rmtension` command."""
    root.add_typer(app, name="judge", help="Evaluate, audit and dissect any reward model.")
