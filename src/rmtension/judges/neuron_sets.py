"""The neuron stage's files as plain data, for every stage that reads them: the scores
(`neurons/<rm>/scores.safetensors`), the sets (`neurons/sets.json`) and their masks, the share of
each block in the shared set; and the seeded pair sample and RM fingerprint the neuron and ablation
stages both use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from rmtension.errors import ArtifactError, ConfigError
from rmtension.judges.select import mask_from_json
from rmtension.neurons.config import p_key
from rmtension.run.runio import MANIFESTS, read_json, safe_name, sha256_file
from rmtension.neurons.config import claim_settings
from rmtension.stats.pvalues import nearest_p


def shared_share(run_dir: Path, rm: str = "mixed") -> dict[str, float] | None:
    """Share of each block's neurons in the `shared` set of the first seed of `rm`, by the claims' scorer
    at the p nearest the claims' (`neurons.report.claim_settings`)."""
    path = run_dir / "neurons" / "sets.json"
    if not path.exists():
        return None
    doc = read_json(path)
    st = claim_settings(run_dir)
    key = next((k for k in doc["sets"] if k.startswith(f"{rm}-seed")), None)
    if key is None or st["scorer"] not in doc["sets"][key]:
        return None
    by_p = doc["sets"][key][st["scorer"]]
    p = nearest_p(list(by_p), st["p"])
    n, first = doc["shape"][1], int(doc.get("first_layer", 0))
    return {f"layers.{first + i}": c / n for i, c in enumerate(by_p[p]["shared"]["per_layer"])}


NEURONS = "neurons"
"""The neuron stage's folder in the run directory."""


def sample_pairs(pairs: Sequence, n: int | None, seed: int) -> list:
    """A seeded sample of at most n pairs, kept in their original order."""
    if n is None or len(pairs) <= n:
        return list(pairs)
    idx = np.sort(np.random.default_rng(seed).choice(len(pairs), n, replace=False))
    return [pairs[i] for i in idx]


def rm_fingerprint(run_dir: Path, objective: str, seed: int) -> str:
    """What an RM's weights depend on: its training manifest's config hash, else a hash of its weights.

    Reading the manifest keeps reruns cheap; the weight hash covers run directories whose RMs were
    placed by hand.
    """
    name, head = objective.partition(":")[::2]  # a head of a multi-head RM: that RM's weights, and the head
    manifest = Path(run_dir) / MANIFESTS / f"{safe_name(f'train/{name}/seed{seed}')}.json"
    if manifest.is_file():
        try:
            return "train:" + read_json(manifest)["config_hash"] + (f":{head}" if head else "")
        except (ArtifactError, KeyError, TypeError):
            pass
    folder = Path(run_dir) / "rm" / name / f"seed{seed}"
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("config.json"))
    return "weights:" + ",".join(sha256_file(w)[:16] for w in weights) + (f":{head}" if head else "")


def read_scores(run_dir: Path) -> dict[str, tuple[dict[str, torch.Tensor], dict[str, str]]]:
    """rm name -> (tensors, metadata) of every neurons/<rm>/scores.safetensors."""
    out = {}
    for path in sorted((Path(run_dir) / NEURONS).glob("*/scores.safetensors")):
        try:
            with safe_open(
                str(path), "pt"
            ) as f:  # metadata comes back in no fixed order: sorted, for stable outputs
                out[path.parent.name] = (
                    {k: f.get_tensor(k) for k in f.keys()},
                    dict(sorted((f.metadata() or {}).items())),
                )
        except Exception as e:  # safetensors raises its own types on truncation
            raise ArtifactError(f"{path}: corrupted safetensors ({e})") from None
    if not out:
        raise ArtifactError(f"{Path(run_dir) / NEURONS}: no scores; run `rmtension neurons score` first")
    return out


def load_sets(run_dir: Path) -> dict:
    return read_json(Path(run_dir) / NEURONS / "sets.json")


def set_mask(doc: dict, rm: str, scorer: str, p: float, name: str) -> torch.Tensor:
    """bool [K, N] over the analysed blocks (`model_mask` places it in the whole model)."""
    try:
        entry = doc["sets"][rm][scorer][p_key(p)][name]
    except KeyError:
        raise ConfigError(
            f"neurons/sets.json has no set {rm}/{scorer}/p={p_key(p)}/{name}; "
            "check ablation.rms/scorers/ps against the neuron stage"
        ) from None
    return mask_from_json(entry, tuple(doc["shape"]))
