"""`rmtension judge dissect`: the paper's neuron analysis on two external judges, through the study's own
neuron and ablation stages.

Judge A stands where the study's helpful RM stands and judge B where its harmless RM stands: a run
directory is laid out as a study's (`config.yaml`, `rm/helpful/seed0`, `rm/harmless/seed0`), the two
pair sets are split by prompt group into scoring pairs and ablation test pairs, and the study's stages
write the same files (`neurons/*`, `ablation.csv`, `neurons/cross_effect.json`), which the study's
report sections then read. The overlap of A's helpful-top neurons with B's harmless-top neurons
(`cross_model` in overlap.json) needs one neuron space: two judges of one shape, refused otherwise.

A judge's head and sign are baked into the saved folder: one head kept, and for `sign=-1` the score
head negated, so every stage reads "higher is better". The stages read HH turns.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rmtension.api import TestSet
from rmtension.config import DataConfig, ModelConfig, StudyConfig, TrainConfig, dump_config
from rmtension.data.objectives import DataBundle, half_of
from rmtension.errors import RmtensionError
from rmtension.judges.load import Judge
from rmtension.model.arch import find_arch
from rmtension.model.heads import score_head
from rmtension.ablation.run import run_ablation
from rmtension.neurons.config import AblationConfig, NeuronsConfig
from rmtension.judges.hooks import neuron_shape
from rmtension.ablation.report import section_ablation, section_cross
from rmtension.neurons.config import claim_settings
from rmtension.neurons.report import section_overlap
from rmtension.neurons.stage import run_neuron_scoring
from rmtension.report.section import write_document
from rmtension.run.context import StudyContext
from rmtension.run.runio import atomic_write_text

ROLES = ("helpful", "harmless")
"""The study's RM names judge A and judge B take."""


def check_same_shape(judges: list[Judge]) -> None:
    """One line when the judges (and a base) do not share one neuron space."""
    shapes = {j.name: (find_arch(j.model).family, neuron_shape(j.model)) for j in judges}
    if len({s for s in shapes.values()}) > 1:
        described = ", ".join(f"{n}: {fam} {list(sh)}" for n, (fam, sh) in shapes.items())
        raise RmtensionError(
            f"judges of different shapes ({described}): neuron overlap needs one neuron space, "
            "two judges of one architecture or a judge and its base"
        )
    vocab = {j.name: j.tokenizer.get_vocab() for j in judges}
    first = next(iter(vocab.values()))
    if any(v != first for v in vocab.values()):
        raise RmtensionError(
            f"judges {', '.join(vocab)} use different tokenizers: one text must be one input"
        )


@torch.no_grad()
def save_as_rm(judge: Judge, folder: Path) -> None:
    """The judge as a one-head HF folder that reads higher-is-better (score head negated for sign -1)."""
    if judge.sign == -1:
        head = getattr(judge.model, score_head(judge.model))
        head.weight.neg_()
        if head.bias is not None:
            head.bias.neg_()
    judge.model.save_pretrained(folder, safe_serialization=True)
    judge.tokenizer.save_pretrained(folder)
    if judge.sign == -1:  # the in-memory judge stays as loaded
        head.weight.neg_()
        if head.bias is not None:
            head.bias.neg_()


def split_halves(test: TestSet, seed: int) -> tuple[list, list]:
    """(scoring pairs, ablation test pairs): a set's two halves by prompt group, so no prompt is in both."""
    score = [p for p in test.pairs if half_of(p, seed) == "half0"]
    held = [p for p in test.pairs if half_of(p, seed) == "half1"]
    if len(score) < 2 or len(held) < 2:
        raise RmtensionError(
            f"--pairs {test.name}: too few pairs to split into scoring and test halves ({len(test.pairs)})"
        )
    return score, held


def dissect(
    out: Path,
    judges: list[Judge],
    base: Judge | None,
    sets: list[TestSet],
    neurons: NeuronsConfig,
    ablation: AblationConfig,
    max_length: int,
) -> Path:
    """Run the neuron and ablation stages on judges A and B; returns the report's HTML path."""
    if len(judges) != 2 or len(sets) != 2:
        raise RmtensionError(
            "dissect takes two judges (--rm A --rm B) and two pair sets (--pairs A_DATA,B_DATA)"
        )
    check_same_shape(judges + ([base] if base is not None else []))
    out = Path(out).resolve()
    for judge, role in zip(judges, ROLES):
        save_as_rm(judge, out / "rm" / role / "seed0")
    backbone = str(out / "base")
    save_as_rm(
        base or judges[0], Path(backbone)
    )  # no base: judge A stands in for it (jaccard_base compares to A)
    cfg = StudyConfig(
        name="dissect",
        data=DataConfig(hub=False),
        model=ModelConfig(backbone=backbone, max_length=max_length),
        train=TrainConfig(seeds=[0], trainable="all", bf16=False),
        neurons=neurons,
        ablation=ablation,
    )
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    splits, tests = {}, {}
    for test, role in zip(sets, ROLES):
        score, held = split_halves(test, neurons.seed)
        splits[role], tests[role] = {"train": score, "val": [], "test": held}, held
    ctx = StudyContext(out, cfg, DataBundle(splits, tests, {}), backbone)
    tok = judges[0].tokenizer
    run_neuron_scoring(ctx, neurons, force=True, tokenizer=tok)
    run_ablation(ctx, ablation, force=True, tokenizer=tok)
    st = claim_settings(out)
    sections = [
        s for s in (section_overlap(out), section_ablation(out, st), section_cross(out, st)) if s is not None
    ]
    return write_document(out, f"Dissection: {judges[0].name} (A) and {judges[1].name} (B)", sections)
