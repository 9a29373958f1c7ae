"""A bench task: what reviewers judge, under which guidelines, and where the replies come from.

Loaded from YAML (`tasks/*.yaml`); every error is one line naming the file and the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from rmtension.errors import ConfigError
from rmtension.strict import Strict
from rmtension.yaml_file import read_mapping


class SourceConfig(Strict):
    kind: Literal["live", "batch"] = "live"
    """`live`: the reviewer chats and the policies reply; `batch`: pairs prepared elsewhere (`load-batch`)."""
    policies: list[str] = Field(default_factory=lambda: ["smollm2-135m"])
    """One entry: two samples of it; two entries: one reply from each. Registry name or HF causal-LM folder."""
    max_new_tokens: int = Field(96, ge=1, le=1024)
    """Reply budget in tokens."""
    temperature: float = Field(0.8, ge=0.0, le=5.0)
    """Sampling temperature; 0 is greedy (then two samples of one policy are identical)."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus filter; 1 turns it off."""
    top_k: int = Field(0, ge=0)
    """Keep only the k most likely tokens; 0 turns it off."""
    sampling_weights: Literal["exact", "fp16"] = "fp16"
    """What the policies' decode steps multiply by (`policy.sampling_weights`): `fp16` copies of an fp32
    Llama policy's matrices halve a reply's time on a CPU (log-probs move by up to ~0.005); each
    judgment records which one drew its replies. `exact` for replies that a claim will read."""
    path: str | None = None
    """Batch only: a JSONL of {"prompt", "reply_a", "reply_b"} or a run directory's bon/samples.parquet."""

    @field_validator("policies")
    @classmethod
    def _one_or_two(cls, v: list[str]) -> list[str]:
        if len(v) not in (1, 2) or not all(p.strip() for p in v):
            raise ValueError("needs one policy (two samples of it) or two (one reply from each)")
        return v


class Task(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """Short identifier: letters, digits, `-`, `_`, `.`."""
    mode: Literal["helpful", "red_team"]
    """`helpful`: pick the more helpful reply; `red_team`: pick the more harmful one (the export flips it)."""
    guideline_version: str = Field(min_length=1, max_length=64)
    """Stored with every judgment, so a change of guidelines can be told apart in the data."""
    k: int = Field(2, ge=1, le=50)
    """Reviewers per batch item."""
    guidelines: str = Field(min_length=1, max_length=50_000)
    """Markdown shown beside the cards (escaped; headings, lists, bold and code are rendered)."""
    source: SourceConfig = Field(default_factory=SourceConfig)
    redact: list[str] = Field(default_factory=list)
    """Regular expressions whose matches the export's `--redact` replaces."""

    @field_validator("redact")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"pattern {pattern!r} does not compile ({e})") from None
        return v

    @model_validator(mode="after")
    def _batch_has_no_sampling(self) -> Task:
        if self.source.kind == "live" and self.source.path is not None:
            raise ValueError("source.path is for kind: batch")
        return self

    @property
    def question(self) -> str:
        """What the page asks the reviewer."""
        return "Which reply is more harmful?" if self.mode == "red_team" else "Which reply is more helpful?"


def _format_error(err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "<root>"
    msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
    return f"{source}: {key}: {msg}"[:300]


def load_task(path: str | Path) -> Task:
    """Parse a task YAML; ConfigError naming the file and the key on any problem."""
    raw = read_mapping(path, "task", "a task is a mapping of keys (name, mode, guidelines, ...)")
    try:
        return Task.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_error(e, str(path))) from None
