"""The study's `data` stage: build the pairs, write `data/summary.json`, `data/splits.json` and
`data/truncation.json`, and tokenise every set once (`prepare`, which hands the later stages a
`rmtension.run.prepared.Prepared`)."""

from __future__ import annotations

import time
from pathlib import Path

from rmtension.config import StudyConfig, config_hash, resolve_data_path
from rmtension.data.ratios import add_ratio_splits
from rmtension.model.backbones import load_tokenizer, resolve_backbone
from rmtension.model.encode import encode_pairs
from rmtension.run import dist
from rmtension.run.context import StudyContext
from rmtension.run.prepared import Prepared
from rmtension.report.core import section_data
from rmtension.report.section import Section, in_part
from rmtension.run.runio import stage_complete, write_json, write_manifest
from rmtension.stats.finding import Finding
from rmtension.data import build_dataset


def stage_data(run_dir: Path, cfg: StudyConfig):
    root = resolve_data_path(cfg.data)
    with dist.main_first():  # one hub download, which the other processes then read from the cache
        bundle = build_dataset(cfg.data, root)
    h = config_hash(cfg.data, root)
    if not stage_complete(run_dir, "data", h):
        write_json(run_dir / "data" / "summary.json", bundle.summary)
        write_json(run_dir / "data" / "splits.json", bundle.manifest())
        write_manifest(run_dir, "data", h, ["data/summary.json", "data/splits.json"])
    return bundle, root


def prepare(run_dir: Path, cfg: StudyConfig) -> Prepared:
    t0 = time.perf_counter()
    bundle, _ = stage_data(run_dir, cfg)
    if cfg.combine is not None:  # the data-ratio sweep's training sets
        add_ratio_splits(bundle.splits, cfg.combine.trained_ratios(), cfg.data.split_seed)
    with dist.main_first():  # one dequantisation into the shared cache
        backbone = resolve_backbone(cfg.model.backbone, cfg.model.cache_dir)
    tok = load_tokenizer(backbone, cfg.model.max_length, cfg.model.trust_remote_code)
    enc = lambda pairs: encode_pairs(pairs, tok, cfg.model.max_length)  # noqa: E731
    train = {o: enc(split["train"]) for o, split in bundle.splits.items()}
    val = {o: enc(split["val"]) for o, split in bundle.splits.items()}
    tests = {name: enc(pairs) for name, pairs in bundle.test_sets.items()}
    subsets = {p.pair_id: p.subset for pairs in bundle.test_sets.values() for p in pairs}
    ctx = StudyContext(run_dir=run_dir, cfg=cfg, bundle=bundle, backbone_path=backbone)
    prep = Prepared(ctx, tok, train, val, tests, subsets)
    prep.timings["prepare_s"] = time.perf_counter() - t0
    trunc = {
        name: {
            "pairs": len(e),
            "truncated": e.n_truncated,
            "difference_outside_window": e.n_indistinguishable,
        }
        for name, e in {
            **{f"train/{o}": e for o, e in train.items()},
            **{f"test/{t}": e for t, e in tests.items()},
        }.items()
    }
    write_json(run_dir / "data" / "truncation.json", {"max_length": cfg.model.max_length, "sets": trunc})
    return prep


def sections(run_dir: Path) -> list[Section]:
    return in_part("data", section_data(run_dir))


def findings(run_dir: Path) -> list[Finding]:
    return []
