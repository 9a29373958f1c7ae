"""The study's `data` stage: build the pairs, write `data/summary.json` and `data/splits.json`."""

from __future__ import annotations

from pathlib import Path

from rmtension.config import StudyConfig, config_hash, resolve_data_path
from rmtension.run import dist
from rmtension.run.runio import stage_complete, write_json, write_manifest


def stage_data(run_dir: Path, cfg: StudyConfig):
    from rmtension.data import build_dataset

    root = resolve_data_path(cfg.data)
    with dist.main_first():  # one hub download, which the other processes then read from the cache
        bundle = build_dataset(cfg.data, root)
    h = config_hash(cfg.data, root)
    if not stage_complete(run_dir, "data", h):
        write_json(run_dir / "data" / "summary.json", bundle.summary)
        write_json(run_dir / "data" / "splits.json", bundle.manifest())
        write_manifest(run_dir, "data", h, ["data/summary.json", "data/splits.json"])
    return bundle, root
