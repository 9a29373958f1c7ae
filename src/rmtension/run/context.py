"""What the study hands to each stage after data and training: typed, read-only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rmtension.config import StudyConfig
    from rmtension.data import DataBundle


@dataclass
class StudyContext:
    run_dir: Path
    cfg: "StudyConfig"
    bundle: "DataBundle"
    """Pairs per objective and split, plus the named test sets."""
    backbone_path: str
    """Local folder (or hub id) of the untrained backbone."""

    def rm_dir(self, objective: str, seed: int) -> Path:
        """HF model folder of one trained reward model (`AutoModelForSequenceClassification` loads it).

        `objective`: a registered RM name, or a head of a multi-head one (`two_head:helpful`), whose
        folder is the multi-head model's (`rm_head` says which head)."""
        return self.run_dir / "rm" / objective.partition(":")[0] / f"seed{seed}"

    @staticmethod
    def rm_head(objective: str) -> str | None:
        """The head of a multi-head RM that `objective` names (`two_head:helpful` -> helpful), else None."""
        return objective.partition(":")[2] or None

    @property
    def seeds(self) -> list[int]:
        return list(self.cfg.train.seeds)
